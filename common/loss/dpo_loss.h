// TRL 1.16's DPO loss family (trl/trainer/dpo_trainer.py, DPOTrainer._compute_loss), computed
// from the per-token outputs of ComputeSequenceLogps on a batch laid out [chosen..., rejected...].
// Every formula follows TRL's code line by line; the two additions TRL 1.16's DPOTrainer lacks are
// marked as ours (reference_free, simpo).
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

#include "common/loss/dpo_loss_options.h"
#include "common/loss/dpo_metrics.h"
#include "common/loss/sequence_logps.h"

namespace dpo {

// Per-sequence log-prob sums [N] over the completion tokens; with ld_alpha, the rows are pairs
// [chosen..., rejected...] and tokens past the pair's shorter completion weigh ld_alpha.
// Differentiable. This is how TRL reduces both the policy and the reference log-probs.
at::Tensor SequenceLogpSums(const SequenceLogps& logps, std::optional<double> ld_alpha);

// Reference sequence log-probs [B] each, from SequenceLogpSums (or precomputed with it).
struct ReferenceLogps {
  at::Tensor chosen;
  at::Tensor rejected;
  // The halves of SequenceLogpSums [2B] over rows [chosen..., rejected...].
  static ReferenceLogps FromSums(const at::Tensor& sums);
};

struct DpoLossResult {
  at::Tensor loss;              // scalar fp32, differentiable w.r.t. policy.token_logps
  at::Tensor chosen_rewards;    // [B] β·(π_chosen - ref_chosen), detached
  at::Tensor rejected_rewards;  // [B] β·(π_rejected - ref_rejected), detached
  // This batch's DpoMetricSums fields [kNumFields], float64 on the loss's device, detached: a
  // step adds its micro-batches' and all-reduces them before one copy to the host
  // (ReadMetricSums), so reading metrics costs no synchronisation per micro-batch.
  at::Tensor metric_sums;
};

// The sums of a metric_sums tensor (one device-to-host copy).
DpoMetricSums ReadMetricSums(const at::Tensor& metric_sums);

// policy: per-token outputs of the policy on [chosen..., rejected...] (2B rows). reference:
// required unless options.reference_free, and must be absent then. Validates options.
DpoLossResult ComputeDpoLoss(const DpoLossOptions& options, const SequenceLogps& policy,
                             const std::optional<ReferenceLogps>& reference);

}  // namespace dpo
