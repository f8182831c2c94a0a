// The logging window's accounting: a skipped step's work counts in throughput with its time
// (once its tokens counted without its time, which inflated tokens/s), and not in the averages.
#include "worker/train/step_result.h"

#include <gtest/gtest.h>

namespace dpo {
namespace {

StepResult MakeStep(bool skipped, double loss, double seconds, int64_t tokens) {
  StepResult step;
  step.skipped = skipped;
  step.loss = loss;
  step.grad_norm = 2 * loss;
  step.lr = 1e-5;
  step.seconds = seconds;
  step.batches.real_tokens = tokens;
  step.batches.pairs = 4;
  step.sums[DpoMetricSums::kPairs] = 4;
  return step;
}

TEST(WindowTest, SkippedStepsCountInThroughputWithTheirTimeButNotInAverages) {
  Window window;
  window.Add(MakeStep(false, 0.5, 1.0, 100));
  window.Add(MakeStep(true, 0.0, 3.0, 300));  // non-finite: no update
  window.Add(MakeStep(false, 0.7, 1.0, 100));
  EXPECT_EQ(window.steps, 2);
  EXPECT_EQ(window.all_steps, 3);
  EXPECT_DOUBLE_EQ(window.loss / window.steps, 0.6);
  EXPECT_DOUBLE_EQ(window.grad_norm / window.steps, 1.2);
  EXPECT_DOUBLE_EQ(window.sums[DpoMetricSums::kPairs], 8);
  // tokens/s = 500 tokens in 5 s; the old accounting gave 500 tokens in 2 s.
  EXPECT_EQ(window.batches.real_tokens, 500);
  EXPECT_DOUBLE_EQ(window.batches.real_tokens / window.seconds, 100.0);
  EXPECT_EQ(window.batches.pairs, 12);
}

}  // namespace
}  // namespace dpo
