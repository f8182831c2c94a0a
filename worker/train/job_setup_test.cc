// The spec's dpo section is the loss's options (DpoLossOptions, passed unchanged): every dpo.*
// key reaches ComputeDpoLoss. simpo_gamma once did not (a hand mapping left it out, training
// always used 0.5), while the oracle tool's own mapping passed it on.
#include "worker/train/job_setup.h"

#include <gtest/gtest.h>

#include "common/config/job_spec.h"

namespace dpo {
namespace {

JobSpec SpecWith(const std::string& dpo_section) {
  return ParseJobSpec(
      "model: {random: {config: c.json}}\ntokenizer: {path: t}\n"
      "data: {train: d.jsonl}\noutput: {dir: out}\ndpo:\n" +
          dpo_section,
      "spec");
}

TEST(LossOptionsTest, EveryDpoKeyReachesTheLossOptions) {
  const DpoLossOptions defaults = SpecWith("  beta: 0.1\n").dpo;
  const DpoLossOptions set = SpecWith(
                                 "  beta: 0.25\n  loss_type: [sigmoid, sft]\n  loss_weights: [0.75, 0.5]\n"
                                 "  label_smoothing: 0.125\n  f_divergence_type: alpha_divergence\n"
                                 "  f_alpha_divergence_coef: 0.3\n  ld_alpha: 0.6\n  use_weighting: true\n"
                                 "  discopop_tau: 0.2\n  simpo_gamma: 1.5\n")
                                 .dpo;
  EXPECT_EQ(set.beta, 0.25);
  ASSERT_EQ(set.loss_type.size(), 2u);
  EXPECT_EQ(set.loss_weights, (std::vector<double>{0.75, 0.5}));
  EXPECT_EQ(set.label_smoothing, 0.125);
  EXPECT_NE(set.f_divergence_type, defaults.f_divergence_type);
  EXPECT_EQ(set.f_alpha_divergence_coef, 0.3);
  EXPECT_EQ(set.ld_alpha, 0.6);
  EXPECT_TRUE(set.use_weighting);
  EXPECT_EQ(set.discopop_tau, 0.2);
  EXPECT_EQ(set.simpo_gamma, 1.5);
  EXPECT_NE(set.simpo_gamma, defaults.simpo_gamma);
}

TEST(LossOptionsTest, ReferenceModeNoneIsReferenceFree) {
  EXPECT_FALSE(SpecWith("  beta: 0.1\n").dpo.reference_free);
  EXPECT_TRUE(ParseJobSpec("model: {random: {config: c.json}}\ntokenizer: {path: t}\n"
                           "data: {train: d.jsonl}\noutput: {dir: out}\nreference: {mode: none}\n",
                           "spec")
                  .dpo.reference_free);
}

}  // namespace
}  // namespace dpo
