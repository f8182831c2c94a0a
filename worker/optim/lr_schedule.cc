#include "worker/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace dpo {

double LrSchedule::At(int64_t step) const {
  using Scheduler = TrainSection::Scheduler;
  if (type == Scheduler::kConstant) return peak_lr;
  if (step < warmup_steps) {
    return peak_lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  }
  const double decay_steps = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  const double progress = static_cast<double>(step - warmup_steps) / decay_steps;
  switch (type) {
    case Scheduler::kLinear: return peak_lr * std::max(0.0, static_cast<double>(total_steps - step) / decay_steps);
    case Scheduler::kCosine: return peak_lr * std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
    case Scheduler::kConstant:
    case Scheduler::kConstantWithWarmup: return peak_lr;
  }
  return peak_lr;
}

int64_t WarmupStepsFromRatio(double ratio, int64_t total_steps) {
  return static_cast<int64_t>(std::ceil(ratio * static_cast<double>(total_steps)));
}

}  // namespace dpo
