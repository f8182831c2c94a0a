// What one optimizer step of the trainer yields, and the logging window that adds steps up
// (trainer.cc). Torch-free.
#pragma once

#include <cstdint>

#include "common/loss/dpo_metrics.h"

namespace dpo {

struct PairBatch;

// What a rank's batches hold, for throughput and padding figures.
struct BatchCounts {
  int64_t real_tokens = 0, cells = 0, filled_cells = 0, pairs = 0;
  void Add(const PairBatch& b);
  void Add(const BatchCounts& c);
};

// One optimizer step, done or skipped (non-finite loss or gradient norm).
struct StepResult {
  bool skipped = false;
  double loss = 0, grad_norm = 0, lr = 0;  // loss: the mean over micro-batches and ranks
  DpoMetricSums sums;                      // over the step's micro-batches and all ranks
  BatchCounts batches;                     // this rank's
  double seconds = 0;
  // Policy state of this rank after the update, before zeroing gradients; and the most it
  // reached during the step (gathered units, reduce-scatters in flight). Done steps only.
  int64_t model_state_bytes = 0, model_state_peak_bytes = 0;
};

// One logging window. Throughput counts every step's batches and time, skipped ones too (the
// machine did that work), so tokens/s is what the hardware sustained; loss, norm and the metric
// sums average over the steps that updated the model.
struct Window {
  DpoMetricSums sums;
  double loss = 0, grad_norm = 0, lr = 0;
  int64_t steps = 0;      // steps that updated the model
  int64_t all_steps = 0;  // skipped ones too
  BatchCounts batches;
  double seconds = 0;
  int64_t model_state_bytes = 0, model_state_peak_bytes = 0;

  void Add(const StepResult& step);
};

}  // namespace dpo
