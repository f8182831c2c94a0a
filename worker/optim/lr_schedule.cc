#include "worker/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "common/util/error.h"

namespace dpo {

LrScheduleType ParseLrScheduleType(std::string_view name, std::string_view field) {
  if (name == "linear") return LrScheduleType::kLinear;
  if (name == "cosine") return LrScheduleType::kCosine;
  if (name == "constant" || name == "constant_with_warmup") return LrScheduleType::kConstant;
  Fail(field, "unknown schedule \"" + std::string(name) + "\"; expected linear, cosine or constant");
}

double LrSchedule::At(int64_t step) const {
  if (step < warmup_steps) {
    return peak_lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  }
  const double decay_steps = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  const double progress = static_cast<double>(step - warmup_steps) / decay_steps;
  switch (type) {
    case LrScheduleType::kLinear:
      return peak_lr * std::max(0.0, static_cast<double>(total_steps - step) / decay_steps);
    case LrScheduleType::kCosine:
      return peak_lr * std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
    case LrScheduleType::kConstant:
      return peak_lr;
  }
  return peak_lr;
}

int64_t WarmupStepsFromRatio(double ratio, int64_t total_steps) {
  return static_cast<int64_t>(std::ceil(ratio * static_cast<double>(total_steps)));
}

}  // namespace dpo
