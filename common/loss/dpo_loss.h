// TRL 1.16's DPO loss family (trl/trainer/dpo_trainer.py, DPOTrainer._compute_loss), computed
// from the per-token outputs of ComputeSequenceLogps on a batch laid out [chosen..., rejected...].
// Every formula follows TRL's code line by line; the two additions TRL 1.16's DPOTrainer lacks are
// marked as ours (reference_free, simpo).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <vector>

#include "common/loss/dpo_metrics.h"
#include "common/loss/sequence_logps.h"

namespace dpo {

enum class LossType {
  kSigmoid,      // -logσ(βΔ)                                  (DPO)
  kHinge,        // relu(1 - βΔ)                               (SLiC)
  kIpo,          // (Δ_c/n_c - Δ_r/n_r - 1/(2β))², n = completion tokens
  kExoPair,      // EXO-pref, ε = label_smoothing (> 0)
  kNcaPair,      // NCA on the chosen and rejected rewards
  kRobust,       // Robust DPO, label_smoothing = flip probability
  kBcoPair,      // -logσ(r_c) - logσ(-r_r); TRL 1.16 uses no running reward mean here
  kSppoHard,     // SPPO with hard probabilities
  kAot,          // AOT paired (sorted log-ratio differences)
  kAotUnpaired,  // AOT unpaired (sorted chosen and rejected log-ratios)
  kApoZero,      // APO-zero
  kApoDown,      // APO-down
  kDiscopop,     // DiscoPOP, τ = discopop_tau
  kSft,          // mean NLL over chosen completion tokens (with sigmoid: RPO)
  kSigmoidNorm,  // sigmoid on per-token averaged scores
  kSimpo,        // ours: SimPO as TRL's CPO trainer writes it (see DpoLossOptions::simpo_gamma)
};

// Accepts TRL's names ("sigmoid", "aot_unpaired", ...) plus "simpo"; throws dpo::Error listing
// the valid names otherwise.
LossType ParseLossType(std::string_view name);
std::string_view LossTypeName(LossType type);

// f-DPO: the divergence whose f'(π/π_ref) replaces the log-ratio as the score.
enum class FDivergence { kReverseKl, kForwardKl, kJsDivergence, kAlphaDivergence };
FDivergence ParseFDivergence(std::string_view name);  // TRL names; throws dpo::Error
std::string_view FDivergenceName(FDivergence f);

struct DpoLossOptions {
  // Losses summed as Σ weight_i · mean(loss_i). Default: {sigmoid}, plain DPO (TRL's default).
  std::vector<LossType> loss_types = {LossType::kSigmoid};
  // One weight per loss type. Default: empty, meaning 1.0 for each (TRL's default).
  std::vector<double> loss_weights;
  // Deviation from the reference (τ for ipo). Default: 0.1, TRL's default.
  double beta = 0.1;
  // Flip probability (robust, aot*) / ε (exo_pair, simpo). Default: 0, no smoothing.
  double label_smoothing = 0.0;
  // Default: reverse KL, standard DPO. Others allowed only for sigmoid, sigmoid_norm, hinge, ipo,
  // exo_pair, robust, discopop, sft (TRL's rule: the rest have no valid f-DPO form).
  FDivergence f_divergence = FDivergence::kReverseKl;
  // α of the α-divergence. Default: 0.5, TRL's default.
  double f_alpha_divergence_coef = 0.5;
  // LD-DPO: tokens past the shorter completion of a pair count with weight ld_alpha, in [0, 1].
  // Default: unset, all tokens weigh 1 (standard DPO).
  std::optional<double> ld_alpha;
  // WPO: scale each pair's loss by exp(mean_t(log p_t - log Σ_v p_v²)) of chosen times rejected,
  // without gradient. Not allowed with aot/aot_unpaired (they reorder pairs). With sft the weights
  // scale the SFT term per pair (TRL 1.16 raises there: an in-place write into an expanded
  // tensor). Default: off.
  bool use_weighting = false;
  // DiscoPOP τ. Default: 0.05, the paper's and TRL's value.
  double discopop_tau = 0.05;
  // Ours (TRL 1.16 dropped it): the reference log-probs are taken as 0, so no reference model is
  // run and the rewards are β·(policy log-probs). Default: off.
  bool reference_free = false;
  // SimPO target margin γ. simpo's loss is TRL's CPO trainer's (cpo_alpha = 0, alpha = 0):
  //   x = (avg_c - avg_r) - γ/β, avg = Σ_t log p_t / n_labels (per-token average, no reference,
  //   no LD-DPO weighting), loss = -logσ(βx)(1 - label_smoothing) - logσ(-βx)·label_smoothing.
  // Default: 0.5, TRL's CPOConfig default.
  double simpo_gamma = 0.5;

  // Throws dpo::Error naming the field for combinations TRL rejects (and empty loss_types,
  // mismatched loss_weights, β <= 0, ld_alpha outside [0, 1]).
  void Validate() const;
};

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
  DpoMetricSums metrics;        // this batch's sums and counts (all-reduce, then Logs())
};

// policy: per-token outputs of the policy on [chosen..., rejected...] (2B rows). reference:
// required unless options.reference_free, and must be absent then. Validates options.
DpoLossResult ComputeDpoLoss(const DpoLossOptions& options, const SequenceLogps& policy,
                             const std::optional<ReferenceLogps>& reference);

}  // namespace dpo
