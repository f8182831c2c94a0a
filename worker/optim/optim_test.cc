#include <gtest/gtest.h>

#include <torch/torch.h>

#include "common/util/error.h"
#include "worker/optim/adamw.h"
#include "worker/optim/lr_schedule.h"

namespace dpo {
namespace {

// Our fused AdamW against libtorch's own (unfused) torch::optim::AdamW, an independent
// implementation, over several steps with weight decay. Tolerance 1e-6 absolute: the two differ
// only in float rounding order.
TEST(AdamWTest, MatchesTorchOptimAdamWOverSteps) {
  torch::manual_seed(0);
  at::Tensor init_a = torch::randn({4, 3}), init_b = torch::randn({5});
  at::Tensor a = init_a.clone().requires_grad_(), b = init_b.clone().requires_grad_();
  at::Tensor ra = init_a.clone().requires_grad_(), rb = init_b.clone().requires_grad_();
  AdamW ours({a, b}, {"a", "b"}, {.lr = 0.01, .weight_decay = 0.1});
  torch::optim::AdamW reference({ra, rb}, torch::optim::AdamWOptions(0.01).weight_decay(0.1));
  for (int step = 0; step < 5; ++step) {
    at::Tensor g1 = torch::randn({4, 3}), g2 = torch::randn({5});
    a.mutable_grad() = g1.clone();
    b.mutable_grad() = g2.clone();
    ra.mutable_grad() = g1.clone();
    rb.mutable_grad() = g2.clone();
    ours.Step(0.01);
    reference.step();
  }
  EXPECT_TRUE(torch::allclose(a, ra, 0, 1e-6));
  EXPECT_TRUE(torch::allclose(b, rb, 0, 1e-6));
  EXPECT_FALSE(torch::allclose(a, init_a, 0, 1e-3));  // it did move
}

TEST(AdamWTest, ClipGradNormReturnsPreClipNormAndScales) {
  at::Tensor a = torch::zeros({2}, torch::requires_grad());
  at::Tensor b = torch::zeros({1}, torch::requires_grad());
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  AdamW opt({a, b}, {"a", "b"}, {});
  EXPECT_NEAR(opt.ClipGradNorm(1.0), 5.0, 1e-6);
  const double scale = 1.0 / (5.0 + 1e-6);
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 * scale, 1e-6);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 * scale, 1e-6);
  EXPECT_NEAR(opt.ClipGradNorm(10.0), 1.0, 1e-5);  // below max: unchanged
}

TEST(AdamWTest, StateDictRoundTripsAndNamesMissingEntries) {
  at::Tensor a = torch::ones({3}, torch::requires_grad());
  AdamW opt({a}, {"w"}, {.lr = 0.1});
  a.mutable_grad() = torch::ones({3});
  opt.Step(0.1);
  auto state = opt.StateDict();
  ASSERT_EQ(state.count("exp_avg.w"), 1u);
  EXPECT_EQ(state.at("step.w").item<float>(), 1.0f);
  at::Tensor c = torch::ones({3}, torch::requires_grad());
  AdamW restored({c}, {"w"}, {.lr = 0.1});
  restored.LoadStateDict(state);
  EXPECT_TRUE(torch::equal(restored.StateDict().at("exp_avg_sq.w"), state.at("exp_avg_sq.w")));
  state.erase("exp_avg.w");
  try {
    restored.LoadStateDict(state);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exp_avg.w"), std::string::npos);
  }
}

TEST(LrScheduleTest, MatchesTransformersFormulas) {
  LrSchedule linear{.type = LrScheduleType::kLinear, .peak_lr = 1.0, .warmup_steps = 2,
                    .total_steps = 10};
  EXPECT_DOUBLE_EQ(linear.At(0), 0.0);
  EXPECT_DOUBLE_EQ(linear.At(1), 0.5);
  EXPECT_DOUBLE_EQ(linear.At(2), 1.0);
  EXPECT_DOUBLE_EQ(linear.At(6), 0.5);   // (10-6)/(10-2)
  EXPECT_DOUBLE_EQ(linear.At(10), 0.0);
  LrSchedule cosine{.type = LrScheduleType::kCosine, .peak_lr = 2.0, .warmup_steps = 0,
                    .total_steps = 4};
  EXPECT_DOUBLE_EQ(cosine.At(0), 2.0);
  EXPECT_NEAR(cosine.At(2), 1.0, 1e-12);  // half way: 0.5 * (1 + cos(pi/2))
  LrSchedule constant{.type = LrScheduleType::kConstant, .peak_lr = 3.0, .warmup_steps = 3,
                      .total_steps = 9};
  EXPECT_DOUBLE_EQ(constant.At(1), 1.0);
  EXPECT_DOUBLE_EQ(constant.At(8), 3.0);
  EXPECT_EQ(WarmupStepsFromRatio(0.1, 25), 3);  // ceil(2.5)
  EXPECT_THROW(ParseLrScheduleType("exp", "train.lr_scheduler_type"), Error);
}

}  // namespace
}  // namespace dpo
