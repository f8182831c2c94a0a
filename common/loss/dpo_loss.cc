#include "common/loss/dpo_loss.h"

#include <torch/torch.h>

#include <array>
#include <cmath>
#include <set>
#include <string>

#include "common/util/error.h"

namespace dpo {
namespace {

namespace F = torch::nn::functional;

constexpr std::array<std::pair<LossType, std::string_view>, 16> kLossNames = {{
    {LossType::kSigmoid, "sigmoid"},
    {LossType::kHinge, "hinge"},
    {LossType::kIpo, "ipo"},
    {LossType::kExoPair, "exo_pair"},
    {LossType::kNcaPair, "nca_pair"},
    {LossType::kRobust, "robust"},
    {LossType::kBcoPair, "bco_pair"},
    {LossType::kSppoHard, "sppo_hard"},
    {LossType::kAot, "aot"},
    {LossType::kAotUnpaired, "aot_unpaired"},
    {LossType::kApoZero, "apo_zero"},
    {LossType::kApoDown, "apo_down"},
    {LossType::kDiscopop, "discopop"},
    {LossType::kSft, "sft"},
    {LossType::kSigmoidNorm, "sigmoid_norm"},
    {LossType::kSimpo, "simpo"},
}};

constexpr std::array<std::pair<FDivergence, std::string_view>, 4> kFDivergenceNames = {{
    {FDivergence::kReverseKl, "reverse_kl"},
    {FDivergence::kForwardKl, "forward_kl"},
    {FDivergence::kJsDivergence, "js_divergence"},
    {FDivergence::kAlphaDivergence, "alpha_divergence"},
}};

template <typename Table>
std::string NameList(const Table& table) {
  std::string s;
  for (const auto& [value, name] : table) s += (s.empty() ? "" : ", ") + std::string(name);
  return s;
}

at::Tensor LogSigmoid(const at::Tensor& x) { return F::logsigmoid(x); }

// Splits a [2B, ...] tensor into its chosen and rejected halves.
std::pair<at::Tensor, at::Tensor> Halves(const at::Tensor& t) {
  const auto parts = t.chunk(2, 0);
  return {parts[0], parts[1]};
}

// f'(π/π_ref) for the f-divergence, from the log-ratio (TRL's `*_scores`).
at::Tensor Score(const DpoLossOptions& o, const at::Tensor& logratios) {
  switch (o.f_divergence) {
    case FDivergence::kReverseKl:
      return logratios;
    case FDivergence::kForwardKl:
      return 1 - torch::exp(-logratios);
    case FDivergence::kJsDivergence:
      return std::log(2.0) + LogSigmoid(logratios);
    case FDivergence::kAlphaDivergence: {
      const double alpha = o.f_alpha_divergence_coef;
      if (std::abs(alpha - 1.0) < 1e-6) return logratios;  // the limit f'(t) -> log t
      const double coef = 1.0 / (alpha - 1.0);
      const at::Tensor t = (alpha - 1.0) * logratios;
      // TRL clamps before exp so the value stays representable; 80 is its fp32 bound.
      return (torch::exp(torch::clamp(t.to(torch::kFloat), c10::nullopt, 80.0)) - 1.0)
                 .to(t.scalar_type()) *
             coef;
    }
  }
  Fail("DpoLossOptions.f_divergence", "unknown value");
}

void AddMetrics(const SequenceLogps& policy, const at::Tensor& chosen_logps,
                const at::Tensor& rejected_logps, const at::Tensor& chosen_rewards,
                const at::Tensor& rejected_rewards, DpoMetricSums& m) {
  torch::NoGradGuard no_grad;
  const at::Tensor mask = policy.label_mask;
  const auto [chosen_mask, rejected_mask] = Halves(mask);
  const auto [chosen_mean_logits, rejected_mean_logits] = Halves(policy.token_mean_logits);
  const at::Tensor chosen_top1 = Halves(policy.token_is_top1).first;
  auto sum = [](const at::Tensor& t) { return t.sum().item<double>(); };
  m[DpoMetricSums::kEntropySum] = sum(policy.token_entropy.masked_select(mask));
  m[DpoMetricSums::kTokens] = sum(mask);
  m[DpoMetricSums::kChosenLogitsSum] = sum(chosen_mean_logits.masked_select(chosen_mask));
  m[DpoMetricSums::kChosenTokens] = sum(chosen_mask);
  m[DpoMetricSums::kRejectedLogitsSum] = sum(rejected_mean_logits.masked_select(rejected_mask));
  m[DpoMetricSums::kRejectedTokens] = sum(rejected_mask);
  m[DpoMetricSums::kChosenTop1] = sum(chosen_top1.logical_and(chosen_mask));
  m[DpoMetricSums::kPairs] = static_cast<double>(chosen_rewards.size(0));
  m[DpoMetricSums::kChosenRewardsSum] = sum(chosen_rewards);
  m[DpoMetricSums::kRejectedRewardsSum] = sum(rejected_rewards);
  m[DpoMetricSums::kRewardAccurate] = sum(chosen_rewards.gt(rejected_rewards));
  m[DpoMetricSums::kMarginsSum] = sum(chosen_rewards - rejected_rewards);
  m[DpoMetricSums::kChosenLogpsSum] = sum(chosen_logps);
  m[DpoMetricSums::kRejectedLogpsSum] = sum(rejected_logps);
}

void CheckPolicy(const SequenceLogps& p) {
  constexpr const char* kWhere = "ComputeDpoLoss: policy";
  if (!p.token_logps.defined() || p.token_logps.dim() != 2 || p.token_logps.size(0) % 2 != 0 ||
      p.token_logps.size(0) == 0)
    Fail(kWhere, "token_logps must be [2B, T-1] with B >= 1 ([chosen..., rejected...])");
  for (const at::Tensor* t : {&p.token_entropy, &p.token_log_sum_sq_probs, &p.token_mean_logits,
                              &p.token_is_top1, &p.label_mask})
    if (!t->defined() || t->sizes() != p.token_logps.sizes())
      Fail(kWhere, "every token_* field and label_mask must match token_logps' shape");
  if (!p.completion_tokens.defined() || p.completion_tokens.dim() != 1 ||
      p.completion_tokens.size(0) != p.token_logps.size(0))
    Fail(kWhere, "completion_tokens must be [2B]");
}

}  // namespace

LossType ParseLossType(std::string_view name) {
  for (const auto& [type, n] : kLossNames)
    if (n == name) return type;
  Fail("loss_type", "unknown loss type '" + std::string(name) + "'; valid: " +
                        NameList(kLossNames));
}

std::string_view LossTypeName(LossType type) {
  for (const auto& [t, name] : kLossNames)
    if (t == type) return name;
  Fail("LossTypeName", "unknown LossType " + std::to_string(static_cast<int>(type)));
}

FDivergence ParseFDivergence(std::string_view name) {
  for (const auto& [f, n] : kFDivergenceNames)
    if (n == name) return f;
  Fail("f_divergence_type", "unknown f-divergence '" + std::string(name) + "'; valid: " +
                                NameList(kFDivergenceNames));
}

std::string_view FDivergenceName(FDivergence f) {
  for (const auto& [value, name] : kFDivergenceNames)
    if (value == f) return name;
  Fail("FDivergenceName", "unknown FDivergence " + std::to_string(static_cast<int>(f)));
}

void DpoLossOptions::Validate() const {
  const std::string where = "DpoLossOptions.";
  if (loss_types.empty()) Fail(where + "loss_types", "must name at least one loss");
  if (!loss_weights.empty() && loss_weights.size() != loss_types.size())
    Fail(where + "loss_weights", "has " + std::to_string(loss_weights.size()) +
                                     " weights for " + std::to_string(loss_types.size()) +
                                     " loss types");
  if (!(beta > 0)) Fail(where + "beta", "must be > 0, got " + std::to_string(beta));
  if (!(label_smoothing >= 0 && label_smoothing < 1))
    Fail(where + "label_smoothing", "must lie in [0, 1), got " + std::to_string(label_smoothing));
  if (ld_alpha && !(*ld_alpha >= 0 && *ld_alpha <= 1))
    Fail(where + "ld_alpha", "must lie in [0, 1], got " + std::to_string(*ld_alpha));
  static const std::set<LossType> kFDivergenceLosses = {
      LossType::kSigmoid, LossType::kSigmoidNorm, LossType::kHinge,    LossType::kIpo,
      LossType::kExoPair, LossType::kRobust,      LossType::kDiscopop, LossType::kSft};
  for (LossType t : loss_types) {
    const std::string name(LossTypeName(t));
    if (f_divergence != FDivergence::kReverseKl && !kFDivergenceLosses.count(t))
      Fail(where + "f_divergence", std::string(FDivergenceName(f_divergence)) +
                                       " is only supported for sigmoid, sigmoid_norm, hinge, "
                                       "ipo, exo_pair, robust, discopop, sft; not " + name);
    if (use_weighting && (t == LossType::kAot || t == LossType::kAotUnpaired))
      Fail(where + "use_weighting", "WPO weighting is not supported with " + name +
                                        ", which sorts the pairs");
    if (t == LossType::kExoPair && label_smoothing == 0)
      Fail(where + "label_smoothing", "must be > 0 for exo_pair (the EXO paper suggests 1e-3)");
    // TRL only warns here, but at 0.5 robust divides by zero and above it flips the sign.
    if (t == LossType::kRobust && label_smoothing >= 0.5)
      Fail(where + "label_smoothing", "must lie in [0, 0.5) for robust, got " +
                                          std::to_string(label_smoothing));
  }
}

ReferenceLogps ReferenceLogps::FromSums(const at::Tensor& sums) {
  const auto [chosen, rejected] = Halves(sums);
  return {chosen, rejected};
}

at::Tensor SequenceLogpSums(const SequenceLogps& logps, std::optional<double> ld_alpha) {
  const at::Tensor& per_token = logps.token_logps;
  if (!ld_alpha) return per_token.sum(1);
  if (per_token.size(0) % 2 != 0)
    Fail("SequenceLogpSums", "ld_alpha needs [chosen..., rejected...] rows, got an odd count");
  const at::Tensor mask = logps.label_mask.to(torch::kLong);
  const at::Tensor comp_pos = mask.cumsum(1);
  const auto [chosen_lens, rejected_lens] = Halves(mask.sum(1));
  const at::Tensor shared = torch::minimum(chosen_lens, rejected_lens).repeat({2}).unsqueeze(1);
  const at::Tensor shared_mask = comp_pos.gt(0).logical_and(comp_pos.le(shared));
  const at::Tensor tail_mask = comp_pos.gt(shared);
  return (per_token * shared_mask).sum(1) + *ld_alpha * (per_token * tail_mask).sum(1);
}

DpoLossResult ComputeDpoLoss(const DpoLossOptions& o, const SequenceLogps& policy,
                             const std::optional<ReferenceLogps>& reference) {
  o.Validate();
  CheckPolicy(policy);
  const at::Tensor logps = SequenceLogpSums(policy, o.ld_alpha);
  const auto [chosen_logps, rejected_logps] = Halves(logps);
  const int64_t pairs = chosen_logps.size(0);

  at::Tensor ref_chosen, ref_rejected;
  if (o.reference_free) {
    if (reference) Fail("ComputeDpoLoss", "reference_free is set but reference log-probs were given");
    ref_chosen = torch::zeros_like(chosen_logps).detach();
    ref_rejected = torch::zeros_like(rejected_logps).detach();
  } else {
    if (!reference) Fail("ComputeDpoLoss", "reference log-probs are required (or reference_free)");
    ref_chosen = reference->chosen.detach();
    ref_rejected = reference->rejected.detach();
    for (const at::Tensor* t : {&ref_chosen, &ref_rejected})
      if (t->dim() != 1 || t->size(0) != pairs)
        Fail("ComputeDpoLoss: reference", "chosen and rejected must be [B] with B = " +
                                              std::to_string(pairs));
  }

  const at::Tensor chosen_logratios = chosen_logps - ref_chosen;
  const at::Tensor rejected_logratios = rejected_logps - ref_rejected;
  const at::Tensor chosen_scores = Score(o, chosen_logratios);
  const at::Tensor rejected_scores = Score(o, rejected_logratios);
  const at::Tensor delta_score = chosen_scores - rejected_scores;
  const double beta = o.beta, ls = o.label_smoothing;
  const auto [chosen_count, rejected_count] = Halves(policy.completion_tokens.clamp_min(1.0));
  const auto [chosen_label_mask, rejected_label_mask] = Halves(policy.label_mask);

  at::Tensor wpo_weights;  // [B], no grad
  if (o.use_weighting) {
    torch::NoGradGuard no_grad;
    const at::Tensor lengths = policy.label_mask.sum(1).clamp_min(1);
    const at::Tensor aligned =
        (policy.token_logps - policy.token_log_sum_sq_probs) * policy.label_mask;
    const auto [chosen_w, rejected_w] = Halves(torch::exp(aligned.sum(1) / lengths));
    wpo_weights = chosen_w * rejected_w;
  }

  at::Tensor loss;
  for (size_t i = 0; i < o.loss_types.size(); ++i) {
    at::Tensor per_seq;
    switch (o.loss_types[i]) {
      case LossType::kSigmoid:
        per_seq = -LogSigmoid(beta * delta_score);
        break;
      case LossType::kHinge:
        per_seq = torch::relu(1 - beta * delta_score);
        break;
      case LossType::kIpo: {
        const at::Tensor ipo_delta = chosen_scores / chosen_count - rejected_scores / rejected_count;
        per_seq = (ipo_delta - 1 / (2 * beta)).pow(2);
        break;
      }
      case LossType::kExoPair: {
        const at::Tensor eps = torch::tensor(ls, logps.options().requires_grad(false));
        const at::Tensor x = beta * delta_score;
        per_seq = torch::sigmoid(x) * (LogSigmoid(x) - torch::log1p(-eps)) +
                  torch::sigmoid(-x) * (LogSigmoid(-x) - torch::log(eps));
        break;
      }
      case LossType::kNcaPair: {
        const at::Tensor rc = beta * chosen_logratios, rr = beta * rejected_logratios;
        per_seq = -LogSigmoid(rc) - 0.5 * LogSigmoid(-rc) - 0.5 * LogSigmoid(-rr);
        break;
      }
      case LossType::kRobust: {
        const at::Tensor clean = -(1 - ls) * LogSigmoid(beta * delta_score);
        const at::Tensor flipped = -ls * LogSigmoid(-beta * delta_score);
        per_seq = (clean - flipped) / (1 - 2 * ls);
        break;
      }
      case LossType::kBcoPair:
        per_seq = -LogSigmoid(beta * chosen_logratios) - LogSigmoid(-beta * rejected_logratios);
        break;
      case LossType::kSppoHard:
        per_seq = (chosen_logratios - 0.5 / beta).pow(2) + (rejected_logratios + 0.5 / beta).pow(2);
        break;
      case LossType::kAot:
      case LossType::kAotUnpaired: {
        at::Tensor a, b;
        if (o.loss_types[i] == LossType::kAot) {
          a = std::get<0>(torch::sort(chosen_logps - rejected_logps, 0));
          b = std::get<0>(torch::sort(ref_chosen - ref_rejected, 0));
        } else {
          a = std::get<0>(torch::sort(chosen_logratios, 0));
          b = std::get<0>(torch::sort(rejected_logratios, 0));
        }
        const at::Tensor delta = a - b;
        per_seq = -LogSigmoid(beta * delta) * (1 - ls) - LogSigmoid(-beta * delta) * ls;
        break;
      }
      case LossType::kApoZero:
        per_seq = (1 - torch::sigmoid(beta * chosen_logratios)) +
                  torch::sigmoid(beta * rejected_logratios);
        break;
      case LossType::kApoDown:
        per_seq = torch::sigmoid(beta * chosen_logratios) +
                  (1 - torch::sigmoid(beta * (chosen_logratios - rejected_logratios)));
        break;
      case LossType::kDiscopop: {
        const at::Tensor logits = delta_score * beta;
        const at::Tensor modulation = torch::sigmoid(logits / o.discopop_tau);
        per_seq = -LogSigmoid(logits) * (1 - modulation) + torch::exp(-logits) * modulation;
        break;
      }
      case LossType::kSft: {
        const at::Tensor chosen_tokens = Halves(policy.token_logps).first;
        per_seq = (-chosen_tokens.masked_select(chosen_label_mask).mean()).expand({pairs});
        break;
      }
      case LossType::kSigmoidNorm: {
        const at::Tensor delta = chosen_scores / chosen_count - rejected_scores / rejected_count;
        per_seq = -LogSigmoid(beta * delta);
        break;
      }
      case LossType::kSimpo: {
        const auto [chosen_tokens, rejected_tokens] = Halves(policy.token_logps);
        const at::Tensor avg_c = (chosen_tokens * chosen_label_mask).sum(1) / chosen_label_mask.sum(1);
        const at::Tensor avg_r =
            (rejected_tokens * rejected_label_mask).sum(1) / rejected_label_mask.sum(1);
        const at::Tensor x = (avg_c - avg_r) - o.simpo_gamma / beta;
        per_seq = -LogSigmoid(beta * x) * (1 - ls) - LogSigmoid(-beta * x) * ls;
        break;
      }
    }
    if (o.use_weighting) per_seq = per_seq * wpo_weights;
    const double weight = o.loss_weights.empty() ? 1.0 : o.loss_weights[i];
    const at::Tensor term = per_seq.mean() * weight;
    loss = loss.defined() ? loss + term : term;
  }

  DpoLossResult result;
  result.loss = loss;
  result.chosen_rewards = beta * chosen_logratios.detach();
  result.rejected_rewards = beta * rejected_logratios.detach();
  AddMetrics(policy, chosen_logps, rejected_logps, result.chosen_rewards, result.rejected_rewards,
             result.metrics);
  return result;
}

}  // namespace dpo
