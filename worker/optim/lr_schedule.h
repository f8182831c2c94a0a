// Learning-rate schedules, as transformers' get_scheduler computes them: linear warmup from 0
// over `warmup_steps`, then linear decay to 0, cosine decay to 0 (half a cycle), or constant.
// The schedule's type is the spec's own train.lr_scheduler_type (one definition of the names).
#pragma once

#include <cstdint>

#include "common/config/job_spec.h"

namespace dpo {

struct LrSchedule {
  // constant has no warmup (HF's "constant" ignores warmup_steps); constant_with_warmup has.
  // Default: linear, HF's default.
  TrainSection::Scheduler type = TrainSection::Scheduler::kLinear;
  double peak_lr = 1e-6;  // Default: TRL DPOConfig
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  // Learning rate for optimizer step `step` (0-based: the lr used by the (step+1)-th update).
  double At(int64_t step) const;
};

// Warmup steps from a ratio, as HF does: ceil(ratio * total_steps).
int64_t WarmupStepsFromRatio(double ratio, int64_t total_steps);

}  // namespace dpo
