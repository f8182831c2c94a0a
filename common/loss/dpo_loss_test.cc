#include "common/loss/dpo_loss.h"

#include <gtest/gtest.h>

#include <cmath>

#include <torch/torch.h>

#include "common/util/error.h"

namespace dpo {
namespace {

// Two pairs, T-1 = 3 positions: rows [chosen0, chosen1, rejected0, rejected1].
SequenceLogps MakePolicy() {
  SequenceLogps s;
  s.label_mask = torch::tensor({1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 0}, torch::kBool).view({4, 3});
  s.token_logps = torch::tensor({-0.5f, -1.0f, 0.f, -0.25f, -0.75f, 0.f, -2.0f, -1.0f, -0.5f, -3.0f, -0.5f, 0.f})
                      .view({4, 3})
                      .requires_grad_();
  s.token_entropy = torch::full({4, 3}, 2.0f) * s.label_mask;
  s.token_log_sum_sq_probs = torch::full({4, 3}, -1.5f) * s.label_mask;
  s.token_mean_logits = torch::full({4, 3}, 0.25f) * s.label_mask;
  s.token_is_top1 = s.label_mask.clone();
  s.completion_tokens = torch::tensor({3.f, 3.f, 4.f, 3.f});
  return s;
}

ReferenceLogps MakeReference() { return {torch::tensor({-2.0f, -1.0f}), torch::tensor({-3.0f, -2.5f})}; }

double Sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// Plain DPO by hand: policy sums c = (-1.5, -1.0), r = (-3.5, -3.5); ref c = (-2, -1),
// r = (-3, -2.5); Δ = (0.5 + 0.5, 0 + 1.0) = (1.0, 1.0).
TEST(DpoLoss, SigmoidValueAndGradientByHand) {
  SequenceLogps policy = MakePolicy();
  DpoLossOptions options;
  options.beta = 0.5;
  DpoLossResult r = ComputeDpoLoss(options, policy, MakeReference());
  const double expected = -std::log(Sigmoid(0.5 * 1.0));
  EXPECT_NEAR(r.loss.item<double>(), expected, 1e-6);
  EXPECT_NEAR(r.chosen_rewards[0].item<double>(), 0.5 * 0.5, 1e-6);
  EXPECT_NEAR(r.rejected_rewards[1].item<double>(), 0.5 * -1.0, 1e-6);
  r.loss.backward();
  // d/d(chosen token) = -β(1 - σ(βΔ)) / B on scored positions, the opposite for rejected.
  const double g = -0.5 * (1 - Sigmoid(0.5)) / 2;
  const at::Tensor grad = policy.token_logps.grad();
  EXPECT_NEAR(grad[0][0].item<double>(), g, 1e-6);
  EXPECT_NEAR(grad[2][1].item<double>(), -g, 1e-6);
  const auto logs = ReadMetricSums(r.metric_sums).Logs();
  EXPECT_EQ(logs[0].first, "entropy");
  EXPECT_NEAR(logs[0].second, 2.0, 1e-6);
  EXPECT_NEAR(logs[6].second, 1.0, 1e-6);  // rewards/accuracies: both pairs ranked right
}

TEST(DpoLoss, RpoSumsWeightedSigmoidAndSft) {
  SequenceLogps policy = MakePolicy();
  DpoLossOptions options;
  options.beta = 0.5;
  options.loss_type = {LossType::kSigmoid, LossType::kSft};
  options.loss_weights = std::vector<double>{1.0, 0.25};
  const double sft = (0.5 + 1.0 + 0.25 + 0.75) / 4;  // mean NLL of the 4 chosen tokens
  const double expected = -std::log(Sigmoid(0.5)) + 0.25 * sft;
  EXPECT_NEAR(ComputeDpoLoss(options, policy, MakeReference()).loss.item<double>(), expected, 1e-6);
}

TEST(DpoLoss, LdAlphaOneIsPlainSumAndZeroCutsTheTail) {
  SequenceLogps policy = MakePolicy();
  const at::Tensor plain = SequenceLogpSums(policy, std::nullopt);
  EXPECT_TRUE(SequenceLogpSums(policy, 1.0).allclose(plain));
  // Pair 1: chosen has 2 tokens, rejected 2: nothing cut. Pair 0: chosen 2, rejected 3: the
  // rejected's third token (-0.5) is cut at ld_alpha = 0.
  const at::Tensor cut = SequenceLogpSums(policy, 0.0);
  EXPECT_NEAR(cut[2].item<double>(), -3.0, 1e-6);
  EXPECT_NEAR(cut[3].item<double>(), plain[3].item<double>(), 1e-6);
}

TEST(DpoLoss, ReferenceFreeEqualsZeroReference) {
  SequenceLogps policy = MakePolicy();
  DpoLossOptions options;
  options.loss_type = {LossType::kIpo};
  const ReferenceLogps zero{torch::zeros({2}), torch::zeros({2})};
  const double with_zero = ComputeDpoLoss(options, policy, zero).loss.item<double>();
  options.reference_free = true;
  EXPECT_NEAR(ComputeDpoLoss(options, policy, std::nullopt).loss.item<double>(), with_zero, 1e-7);
  EXPECT_THROW(ComputeDpoLoss(options, policy, zero), Error);
  options.reference_free = false;
  EXPECT_THROW(ComputeDpoLoss(options, policy, std::nullopt), Error);
}

// SimPO by hand: averages c = (-0.75, -0.5), r = (-1.1667, -1.75); x = Δavg - γ/β.
TEST(DpoLoss, SimpoUsesAveragedLogpsAndMargin) {
  SequenceLogps policy = MakePolicy();
  DpoLossOptions options;
  options.loss_type = {LossType::kSimpo};
  options.beta = 2.0;
  options.simpo_gamma = 1.0;
  options.reference_free = true;
  const double x0 = (-0.75 - (-3.5 / 3)) - 0.5, x1 = (-0.5 - (-1.75)) - 0.5;
  const double expected = -(std::log(Sigmoid(2 * x0)) + std::log(Sigmoid(2 * x1))) / 2;
  EXPECT_NEAR(ComputeDpoLoss(options, policy, std::nullopt).loss.item<double>(), expected, 1e-6);
}

// Metric sums from two ranks add up before the ratios are taken; empty counts give 0 as in TRL.
TEST(DpoMetricSums, AddsThenDivides) {
  DpoMetricSums a, b;
  a[DpoMetricSums::kChosenRewardsSum] = 1.0;
  a[DpoMetricSums::kPairs] = 2;
  b[DpoMetricSums::kChosenRewardsSum] = 2.0;
  b[DpoMetricSums::kPairs] = 1;
  a.Add(b);
  for (const auto& [name, value] : a.Logs()) {
    if (name == "rewards/chosen") {
      EXPECT_DOUBLE_EQ(value, 1.0);
    }
    if (name == "entropy") {
      EXPECT_DOUBLE_EQ(value, 0.0);
    }
  }
  EXPECT_EQ(a.Logs().size(), 10u);
}

TEST(DpoLoss, NamesAreTrlsBothWays) {
  EXPECT_EQ(ValueOf(LossTypeNames(), "aot_unpaired"), LossType::kAotUnpaired);
  EXPECT_EQ(NameOf(LossTypeNames(), LossType::kSigmoidNorm), "sigmoid_norm");
  EXPECT_EQ(ValueOf(FDivergenceNames(), "js_divergence"), FDivergence::kJsDivergence);
  EXPECT_EQ(ValueOf(LossTypeNames(), "aot_pair"), std::nullopt);
  EXPECT_EQ(LossTypeNames().size(), static_cast<size_t>(LossType::kSimpo) + 1);
}

TEST(DpoLoss, ValidateRejectsWhatTrlRejects) {
  auto invalid = [](auto mutate) {
    DpoLossOptions o;
    mutate(o);
    EXPECT_THROW(o.Validate(), Error);
  };
  invalid([](DpoLossOptions& o) { o.loss_type = {LossType::kExoPair}; });  // ε = 0
  invalid([](DpoLossOptions& o) {
    o.loss_type = {LossType::kBcoPair};
    o.f_divergence_type = FDivergence::kForwardKl;
  });
  invalid([](DpoLossOptions& o) {
    o.loss_type = {LossType::kAot};
    o.use_weighting = true;
  });
  invalid([](DpoLossOptions& o) { o.loss_weights = std::vector<double>{1.0, 2.0}; });
  invalid([](DpoLossOptions& o) { o.discopop_tau = 0; });
  invalid([](DpoLossOptions& o) { o.ld_alpha = 1.5; });
  invalid([](DpoLossOptions& o) {
    o.loss_type = {LossType::kRobust};
    o.label_smoothing = 0.5;
  });
  try {
    DpoLossOptions o;
    o.loss_type = {LossType::kRobust};
    o.label_smoothing = 0.5;
    o.Validate();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dpo.label_smoothing: must be in [0, 0.5) for the robust loss"),
              std::string::npos)
        << e.what();
  }
  DpoLossOptions ok;
  ok.loss_type = {LossType::kHinge, LossType::kSft};
  ok.f_divergence_type = FDivergence::kAlphaDivergence;
  EXPECT_NO_THROW(ok.Validate());
}

}  // namespace
}  // namespace dpo
