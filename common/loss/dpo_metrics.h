// The metrics DPOTrainer (TRL 1.16) logs per step, kept as sums and counts so that ranks can
// all-reduce them element-wise before the ratios are taken, as TRL's gather_for_metrics does.
#pragma once

#include <array>
#include <string>
#include <utility>
#include <vector>

namespace dpo {

struct DpoMetricSums {
  enum Field {
    kEntropySum,          // Σ per-token entropy over completion tokens of all rows
    kTokens,              // completion tokens of all rows (chosen + rejected)
    kChosenLogitsSum,     // Σ per-token mean logit over chosen completion tokens
    kChosenTokens,        // chosen completion tokens
    kRejectedLogitsSum,   // Σ per-token mean logit over rejected completion tokens
    kRejectedTokens,      // rejected completion tokens
    kChosenTop1,          // chosen completion tokens whose label is the argmax
    kPairs,               // preference pairs
    kChosenRewardsSum,    // Σ β·(π_chosen - ref_chosen)
    kRejectedRewardsSum,  // Σ β·(π_rejected - ref_rejected)
    kRewardAccurate,      // pairs with chosen reward > rejected reward
    kMarginsSum,          // Σ chosen reward - rejected reward
    kChosenLogpsSum,      // Σ policy chosen sequence log-probs (LD-DPO weighted if set)
    kRejectedLogpsSum,    // Σ policy rejected sequence log-probs
    kNumFields
  };
  std::array<double, kNumFields> values{};

  double& operator[](Field f) { return values[f]; }
  double operator[](Field f) const { return values[f]; }
  void Add(const DpoMetricSums& other);

  // TRL's names and values: entropy, logits/chosen, logits/rejected, mean_token_accuracy,
  // rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen,
  // logps/rejected. A ratio whose count is 0 is 0, as in TRL.
  std::vector<std::pair<std::string, double>> Logs() const;
};

}  // namespace dpo
