// Learning-rate schedules, as transformers' get_scheduler computes them: linear warmup from 0
// over `warmup_steps`, then linear decay to 0, cosine decay to 0 (half a cycle), or constant.
#pragma once

#include <cstdint>
#include <string_view>

namespace dpo {

enum class LrScheduleType { kLinear, kCosine, kConstant };

// "linear", "cosine", "constant" (also "constant_with_warmup"). Throws dpo::Error naming `field`.
LrScheduleType ParseLrScheduleType(std::string_view name, std::string_view field);

struct LrSchedule {
  LrScheduleType type = LrScheduleType::kLinear;  // Default: HF's default
  double peak_lr = 1e-6;                          // Default: TRL DPOConfig
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  // Learning rate for optimizer step `step` (0-based: the lr used by the (step+1)-th update).
  double At(int64_t step) const;
};

// Warmup steps from a ratio, as HF does: ceil(ratio * total_steps).
int64_t WarmupStepsFromRatio(double ratio, int64_t total_steps);

}  // namespace dpo
