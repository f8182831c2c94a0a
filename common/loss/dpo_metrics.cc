#include "common/loss/dpo_metrics.h"

namespace dpo {
namespace {

double Ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

}  // namespace

void DpoMetricSums::Add(const DpoMetricSums& other) {
  for (int i = 0; i < kNumFields; ++i) values[i] += other.values[i];
}

std::vector<std::pair<std::string, double>> DpoMetricSums::Logs() const {
  const DpoMetricSums& m = *this;
  return {
      {"entropy", Ratio(m[kEntropySum], m[kTokens])},
      {"logits/chosen", Ratio(m[kChosenLogitsSum], m[kChosenTokens])},
      {"logits/rejected", Ratio(m[kRejectedLogitsSum], m[kRejectedTokens])},
      {"mean_token_accuracy", Ratio(m[kChosenTop1], m[kChosenTokens])},
      {"rewards/chosen", Ratio(m[kChosenRewardsSum], m[kPairs])},
      {"rewards/rejected", Ratio(m[kRejectedRewardsSum], m[kPairs])},
      {"rewards/accuracies", Ratio(m[kRewardAccurate], m[kPairs])},
      {"rewards/margins", Ratio(m[kMarginsSum], m[kPairs])},
      {"logps/chosen", Ratio(m[kChosenLogpsSum], m[kPairs])},
      {"logps/rejected", Ratio(m[kRejectedLogpsSum], m[kPairs])},
  };
}

}  // namespace dpo
