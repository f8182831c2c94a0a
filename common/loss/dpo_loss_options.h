// The options of TRL 1.16's DPO loss family, defined once: the job spec's `dpo` section is this
// struct (common/config/job_spec.h), the worker passes it to ComputeDpoLoss (dpo_loss.h)
// unchanged, and dpo-loss-check reads it through the same spec parser. Field names are the spec's
// keys, which are TRL's DPOConfig names; defaults are TRL's. Torch-free, so the spec can hold it.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/enum_name.h"

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

// f-DPO: the divergence whose f'(π/π_ref) replaces the log-ratio as the score.
enum class FDivergence { kReverseKl, kForwardKl, kJsDivergence, kAlphaDivergence };

// TRL's spellings ("sigmoid", "aot_unpaired", ... in TRL's order, then "simpo"; "reverse_kl", ...).
std::span<const EnumName<LossType>> LossTypeNames();
std::span<const EnumName<FDivergence>> FDivergenceNames();

// What is wrong with one option: its spec key under `dpo.` and the reason.
struct LossOptionProblem {
  std::string key;
  std::string message;
};

struct DpoLossOptions {
  // Deviation from the reference (τ for ipo); > 0. Default: 0.1 (TRL).
  double beta = 0.1;
  // One loss, or several summed as Σ weight_i · mean(loss_i) (TRL's MPO). Default: [sigmoid],
  // plain DPO (TRL).
  std::vector<LossType> loss_type = {LossType::kSigmoid};
  // One weight per loss_type entry. Default: null, 1.0 each (TRL).
  std::optional<std::vector<double>> loss_weights;
  // Flip probability (robust, aot*, in [0, 0.5) for robust) / ε (exo_pair, > 0; simpo), in
  // [0, 1). Default: 0, no smoothing (TRL).
  double label_smoothing = 0.0;
  // Others than reverse_kl only for sigmoid, sigmoid_norm, hinge, ipo, exo_pair, robust,
  // discopop, sft (TRL's rule: the rest have no valid f-DPO form). Default: reverse_kl,
  // standard DPO (TRL).
  FDivergence f_divergence_type = FDivergence::kReverseKl;
  // α of the α-divergence. Default: 0.5 (TRL 1.16).
  double f_alpha_divergence_coef = 0.5;
  // LD-DPO: tokens past the shorter completion of a pair count with weight ld_alpha, in [0, 1].
  // Default: null, all tokens weigh 1 (standard DPO, TRL).
  std::optional<double> ld_alpha;
  // WPO: scale each pair's loss by exp(mean_t(log p_t - log Σ_v p_v²)) of chosen times rejected,
  // without gradient. Not allowed with aot/aot_unpaired (they reorder pairs). With sft the weights
  // scale the SFT term per pair (TRL 1.16 raises there: an in-place write into an expanded
  // tensor). Default: false (TRL).
  bool use_weighting = false;
  // DiscoPOP τ, > 0. Default: 0.05, the paper's and TRL's value.
  double discopop_tau = 0.05;
  // SimPO target margin γ. simpo's loss is TRL's CPO trainer's (cpo_alpha = 0, alpha = 0):
  //   x = (avg_c - avg_r) - γ/β, avg = Σ_t log p_t / n_labels (per-token average, no reference,
  //   no LD-DPO weighting), loss = -logσ(βx)(1 - label_smoothing) - logσ(-βx)·label_smoothing.
  // Default: 0.5, TRL's CPOConfig default.
  double simpo_gamma = 0.5;
  // Not a dpo.* key: the spec sets it from reference.mode none. The reference log-probs are
  // taken as 0, so no reference model is run and the rewards are β·(policy log-probs).
  // Default: false.
  bool reference_free = false;

  // Every combination TRL rejects, and values out of range; empty when the options are valid.
  std::vector<LossOptionProblem> Problems() const;
  // Throws dpo::Error listing Problems(), each as "dpo.<key>: <reason>", if there are any.
  void Validate() const;

  bool operator==(const DpoLossOptions&) const = default;
};

}  // namespace dpo
