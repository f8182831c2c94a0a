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

// HF's Trainer leaves biases and norm weights out of weight decay (get_decay_parameter_names);
// with zero gradients the Adam update is 0, so only the decay moves a weight.
TEST(AdamWTest, WeightDecaySkipsBiasesAndNormsByNameAndBySlice) {
  EXPECT_TRUE(HfDecaysParameter("model.embed_tokens.weight"));
  EXPECT_TRUE(HfDecaysParameter("lm_head.weight"));
  EXPECT_TRUE(HfDecaysParameter("model.layers.0.mlp.up_proj.weight"));
  EXPECT_FALSE(HfDecaysParameter("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_FALSE(HfDecaysParameter("model.layers.0.input_layernorm.weight"));
  EXPECT_FALSE(HfDecaysParameter("model.layers.3.self_attn.k_norm.weight"));
  EXPECT_FALSE(HfDecaysParameter("model.norm.weight"));

  at::Tensor weight = torch::ones({2}, torch::requires_grad());
  at::Tensor norm = torch::ones({2}, torch::requires_grad());
  // A flat shard: elements 0..2 a bias, 2..5 a projection weight.
  at::Tensor flat = torch::ones({5}, torch::requires_grad());
  AdamW opt({weight, norm, flat}, {"model.layers.0.mlp.up_proj.weight", "model.norm.weight", "unit"},
            {.weight_decay = 0.5},
            {{{"model.layers.0.mlp.up_proj.weight", 0, 2}},
             {{"model.norm.weight", 0, 2}},
             {{"model.layers.0.self_attn.q_proj.bias", 0, 2}, {"model.layers.0.self_attn.q_proj.weight", 2, 5}}});
  for (at::Tensor* t : {&weight, &norm, &flat}) t->mutable_grad() = torch::zeros_like(*t);
  opt.Step(0.1);
  EXPECT_TRUE(torch::allclose(weight, torch::full({2}, 0.95)));
  EXPECT_TRUE(torch::equal(norm, torch::ones({2})));
  EXPECT_TRUE(torch::allclose(flat, torch::tensor({1.0f, 1.0f, 0.95f, 0.95f, 0.95f})));
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
  LrSchedule linear{.type = TrainSection::Scheduler::kLinear, .peak_lr = 1.0, .warmup_steps = 2, .total_steps = 10};
  EXPECT_DOUBLE_EQ(linear.At(0), 0.0);
  EXPECT_DOUBLE_EQ(linear.At(1), 0.5);
  EXPECT_DOUBLE_EQ(linear.At(2), 1.0);
  EXPECT_DOUBLE_EQ(linear.At(6), 0.5);  // (10-6)/(10-2)
  EXPECT_DOUBLE_EQ(linear.At(10), 0.0);
  LrSchedule cosine{.type = TrainSection::Scheduler::kCosine, .peak_lr = 2.0, .warmup_steps = 0, .total_steps = 4};
  EXPECT_DOUBLE_EQ(cosine.At(0), 2.0);
  EXPECT_NEAR(cosine.At(2), 1.0, 1e-12);  // half way: 0.5 * (1 + cos(pi/2))
  LrSchedule warm{
      .type = TrainSection::Scheduler::kConstantWithWarmup, .peak_lr = 3.0, .warmup_steps = 3, .total_steps = 9};
  EXPECT_DOUBLE_EQ(warm.At(1), 1.0);
  EXPECT_DOUBLE_EQ(warm.At(8), 3.0);
  LrSchedule constant = warm;
  constant.type = TrainSection::Scheduler::kConstant;  // HF's constant: no warmup
  EXPECT_DOUBLE_EQ(constant.At(0), 3.0);
  EXPECT_EQ(WarmupStepsFromRatio(0.1, 25), 3);  // ceil(2.5)
}

}  // namespace
}  // namespace dpo
