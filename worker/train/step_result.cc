#include "worker/train/step_result.h"

#include "worker/train/pair_batch.h"

namespace dpo {

void BatchCounts::Add(const PairBatch& b) {
  real_tokens += b.real_tokens;
  cells += b.cells;
  filled_cells += b.filled_cells;
  pairs += b.pairs;
}

void BatchCounts::Add(const BatchCounts& c) {
  real_tokens += c.real_tokens;
  cells += c.cells;
  filled_cells += c.filled_cells;
  pairs += c.pairs;
}

void Window::Add(const StepResult& step) {
  ++all_steps;
  batches.Add(step.batches);
  seconds += step.seconds;
  if (step.skipped) return;
  ++steps;
  sums.Add(step.sums);
  loss += step.loss;
  grad_norm += step.grad_norm;
  lr = step.lr;
  model_state_bytes = step.model_state_bytes;
  model_state_peak_bytes = step.model_state_peak_bytes;
}

}  // namespace dpo
