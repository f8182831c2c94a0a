#include "common/loss/dpo_loss.h"

#include <array>
#include <cmath>
#include <string>

#include <torch/torch.h>

#include "common/util/error.h"

namespace dpo {
namespace {

namespace F = torch::nn::functional;

at::Tensor LogSigmoid(const at::Tensor& x) { return F::logsigmoid(x); }

// Splits a [2B, ...] tensor into its chosen and rejected halves.
std::pair<at::Tensor, at::Tensor> Halves(const at::Tensor& t) {
  const auto parts = t.chunk(2, 0);
  return {parts[0], parts[1]};
}

// f'(π/π_ref) for the f-divergence, from the log-ratio (TRL's `*_scores`).
at::Tensor Score(const DpoLossOptions& o, const at::Tensor& logratios) {
  switch (o.f_divergence_type) {
    case FDivergence::kReverseKl: return logratios;
    case FDivergence::kForwardKl: return 1 - torch::exp(-logratios);
    case FDivergence::kJsDivergence: return std::log(2.0) + LogSigmoid(logratios);
    case FDivergence::kAlphaDivergence: {
      const double alpha = o.f_alpha_divergence_coef;
      if (std::abs(alpha - 1.0) < 1e-6) return logratios;  // the limit f'(t) -> log t
      const double coef = 1.0 / (alpha - 1.0);
      const at::Tensor t = (alpha - 1.0) * logratios;
      // TRL clamps before exp so the value stays representable; 80 is its fp32 bound.
      return (torch::exp(torch::clamp(t.to(torch::kFloat), c10::nullopt, 80.0)) - 1.0).to(t.scalar_type()) * coef;
    }
  }
  Fail("DpoLossOptions.f_divergence", "unknown value");
}

// What every loss of the family is computed from, for B pairs (each tensor [B]).
struct PairTerms {
  const DpoLossOptions& o;
  const SequenceLogps& policy;
  at::Tensor chosen_logps, rejected_logps;                 // policy sequence log-probs
  at::Tensor ref_chosen, ref_rejected;                     // reference's, detached
  at::Tensor chosen_logratios, rejected_logratios;         // policy - reference
  at::Tensor chosen_scores, rejected_scores, delta_score;  // f'(ratio), chosen - rejected
  at::Tensor chosen_count, rejected_count;                 // completion tokens, at least 1
};

// One function per loss type: the per-pair loss [B], as TRL's _compute_loss writes it.
using PairLoss = at::Tensor (*)(const PairTerms&);

at::Tensor Sigmoid(const PairTerms& t) { return -LogSigmoid(t.o.beta * t.delta_score); }

at::Tensor Hinge(const PairTerms& t) { return torch::relu(1 - t.o.beta * t.delta_score); }

at::Tensor Ipo(const PairTerms& t) {
  const at::Tensor delta = t.chosen_scores / t.chosen_count - t.rejected_scores / t.rejected_count;
  return (delta - 1 / (2 * t.o.beta)).pow(2);
}

at::Tensor ExoPair(const PairTerms& t) {
  const at::Tensor eps = torch::tensor(t.o.label_smoothing, t.chosen_logps.options().requires_grad(false));
  const at::Tensor x = t.o.beta * t.delta_score;
  return torch::sigmoid(x) * (LogSigmoid(x) - torch::log1p(-eps)) +
         torch::sigmoid(-x) * (LogSigmoid(-x) - torch::log(eps));
}

at::Tensor NcaPair(const PairTerms& t) {
  const at::Tensor rc = t.o.beta * t.chosen_logratios, rr = t.o.beta * t.rejected_logratios;
  return -LogSigmoid(rc) - 0.5 * LogSigmoid(-rc) - 0.5 * LogSigmoid(-rr);
}

at::Tensor Robust(const PairTerms& t) {
  const double ls = t.o.label_smoothing;
  const at::Tensor clean = -(1 - ls) * LogSigmoid(t.o.beta * t.delta_score);
  const at::Tensor flipped = -ls * LogSigmoid(-t.o.beta * t.delta_score);
  return (clean - flipped) / (1 - 2 * ls);
}

at::Tensor BcoPair(const PairTerms& t) {
  return -LogSigmoid(t.o.beta * t.chosen_logratios) - LogSigmoid(-t.o.beta * t.rejected_logratios);
}

at::Tensor SppoHard(const PairTerms& t) {
  return (t.chosen_logratios - 0.5 / t.o.beta).pow(2) + (t.rejected_logratios + 0.5 / t.o.beta).pow(2);
}

// AOT: a smoothed sigmoid loss on the difference of two sorted vectors.
at::Tensor SortedSigmoid(const PairTerms& t, const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor delta = std::get<0>(torch::sort(a, 0)) - std::get<0>(torch::sort(b, 0));
  const double ls = t.o.label_smoothing;
  return -LogSigmoid(t.o.beta * delta) * (1 - ls) - LogSigmoid(-t.o.beta * delta) * ls;
}

at::Tensor Aot(const PairTerms& t) {
  return SortedSigmoid(t, t.chosen_logps - t.rejected_logps, t.ref_chosen - t.ref_rejected);
}

at::Tensor AotUnpaired(const PairTerms& t) { return SortedSigmoid(t, t.chosen_logratios, t.rejected_logratios); }

at::Tensor ApoZero(const PairTerms& t) {
  return (1 - torch::sigmoid(t.o.beta * t.chosen_logratios)) + torch::sigmoid(t.o.beta * t.rejected_logratios);
}

at::Tensor ApoDown(const PairTerms& t) {
  return torch::sigmoid(t.o.beta * t.chosen_logratios) +
         (1 - torch::sigmoid(t.o.beta * (t.chosen_logratios - t.rejected_logratios)));
}

at::Tensor Discopop(const PairTerms& t) {
  const at::Tensor logits = t.delta_score * t.o.beta;
  const at::Tensor modulation = torch::sigmoid(logits / t.o.discopop_tau);
  return -LogSigmoid(logits) * (1 - modulation) + torch::exp(-logits) * modulation;
}

// The batch's mean NLL of the chosen completion tokens, the same for every pair.
at::Tensor Sft(const PairTerms& t) {
  const at::Tensor chosen_tokens = Halves(t.policy.token_logps).first;
  const at::Tensor chosen_mask = Halves(t.policy.label_mask).first;
  return (-chosen_tokens.masked_select(chosen_mask).mean()).expand({t.chosen_logps.size(0)});
}

at::Tensor SigmoidNorm(const PairTerms& t) {
  const at::Tensor delta = t.chosen_scores / t.chosen_count - t.rejected_scores / t.rejected_count;
  return -LogSigmoid(t.o.beta * delta);
}

// Ours: per-token averages of the policy alone (no reference, no LD-DPO weighting).
at::Tensor Simpo(const PairTerms& t) {
  const auto [chosen_tokens, rejected_tokens] = Halves(t.policy.token_logps);
  const auto [chosen_mask, rejected_mask] = Halves(t.policy.label_mask);
  const at::Tensor avg_c = (chosen_tokens * chosen_mask).sum(1) / chosen_mask.sum(1);
  const at::Tensor avg_r = (rejected_tokens * rejected_mask).sum(1) / rejected_mask.sum(1);
  const at::Tensor x = (avg_c - avg_r) - t.o.simpo_gamma / t.o.beta;
  const double ls = t.o.label_smoothing;
  return -LogSigmoid(t.o.beta * x) * (1 - ls) - LogSigmoid(-t.o.beta * x) * ls;
}

// Indexed by LossType, in its declaration order.
constexpr std::array<PairLoss, 16> kPairLosses = {Sigmoid,  Hinge,    Ipo,         ExoPair,     NcaPair, Robust,
                                                  BcoPair,  SppoHard, Aot,         AotUnpaired, ApoZero, ApoDown,
                                                  Discopop, Sft,      SigmoidNorm, Simpo};
static_assert(kPairLosses.size() == static_cast<size_t>(LossType::kSimpo) + 1, "a loss without a function");

// WPO's per-pair weights [B]: exp(mean_t(log p_t - log Σ_v p_v²)) of chosen times rejected.
at::Tensor WpoWeights(const SequenceLogps& policy) {
  torch::NoGradGuard no_grad;
  const at::Tensor lengths = policy.label_mask.sum(1).clamp_min(1);
  const at::Tensor aligned = (policy.token_logps - policy.token_log_sum_sq_probs) * policy.label_mask;
  const auto [chosen_w, rejected_w] = Halves(torch::exp(aligned.sum(1) / lengths));
  return chosen_w * rejected_w;
}

// The reference's [B] log-probs, zeros when reference-free; checks they are what was asked for.
std::pair<at::Tensor, at::Tensor> ReferenceFor(const DpoLossOptions& o, const std::optional<ReferenceLogps>& reference,
                                               const at::Tensor& chosen_logps) {
  if (o.reference_free) {
    if (reference) Fail("ComputeDpoLoss", "reference_free is set but reference log-probs were given");
    return {torch::zeros_like(chosen_logps).detach(), torch::zeros_like(chosen_logps).detach()};
  }
  if (!reference) Fail("ComputeDpoLoss", "reference log-probs are required (or reference_free)");
  for (const at::Tensor* t : {&reference->chosen, &reference->rejected}) {
    if (t->dim() != 1 || t->size(0) != chosen_logps.size(0))
      Fail("ComputeDpoLoss: reference",
           "chosen and rejected must be [B] with B = " + std::to_string(chosen_logps.size(0)));
  }
  return {reference->chosen.detach(), reference->rejected.detach()};
}

// The DpoMetricSums fields of this batch, as one float64 tensor on the batch's device.
at::Tensor MetricSums(const PairTerms& t, const at::Tensor& chosen_rewards, const at::Tensor& rejected_rewards) {
  torch::NoGradGuard no_grad;
  const SequenceLogps& p = t.policy;
  const at::Tensor mask = p.label_mask;
  const auto [chosen_mask, rejected_mask] = Halves(mask);
  const auto [chosen_mean_logits, rejected_mean_logits] = Halves(p.token_mean_logits);
  const at::Tensor chosen_top1 = Halves(p.token_is_top1).first;
  std::array<at::Tensor, DpoMetricSums::kNumFields> fields;
  auto set = [&](DpoMetricSums::Field f, const at::Tensor& v) { fields[f] = v.sum().to(torch::kFloat64); };
  set(DpoMetricSums::kEntropySum, p.token_entropy.masked_select(mask));
  set(DpoMetricSums::kTokens, mask);
  set(DpoMetricSums::kChosenLogitsSum, chosen_mean_logits.masked_select(chosen_mask));
  set(DpoMetricSums::kChosenTokens, chosen_mask);
  set(DpoMetricSums::kRejectedLogitsSum, rejected_mean_logits.masked_select(rejected_mask));
  set(DpoMetricSums::kRejectedTokens, rejected_mask);
  set(DpoMetricSums::kChosenTop1, chosen_top1.logical_and(chosen_mask));
  set(DpoMetricSums::kPairs, torch::ones_like(chosen_rewards));
  set(DpoMetricSums::kChosenRewardsSum, chosen_rewards);
  set(DpoMetricSums::kRejectedRewardsSum, rejected_rewards);
  set(DpoMetricSums::kRewardAccurate, chosen_rewards.gt(rejected_rewards));
  set(DpoMetricSums::kMarginsSum, chosen_rewards - rejected_rewards);
  set(DpoMetricSums::kChosenLogpsSum, t.chosen_logps.detach());
  set(DpoMetricSums::kRejectedLogpsSum, t.rejected_logps.detach());
  return torch::stack(fields);
}

void CheckPolicy(const SequenceLogps& p) {
  constexpr const char* kWhere = "ComputeDpoLoss: policy";
  if (!p.token_logps.defined() || p.token_logps.dim() != 2 || p.token_logps.size(0) % 2 != 0 ||
      p.token_logps.size(0) == 0)
    Fail(kWhere, "token_logps must be [2B, T-1] with B >= 1 ([chosen..., rejected...])");
  for (const at::Tensor* t :
       {&p.token_entropy, &p.token_log_sum_sq_probs, &p.token_mean_logits, &p.token_is_top1, &p.label_mask})
    if (!t->defined() || t->sizes() != p.token_logps.sizes())
      Fail(kWhere, "every token_* field and label_mask must match token_logps' shape");
  if (!p.completion_tokens.defined() || p.completion_tokens.dim() != 1 ||
      p.completion_tokens.size(0) != p.token_logps.size(0))
    Fail(kWhere, "completion_tokens must be [2B]");
}

}  // namespace

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

DpoMetricSums ReadMetricSums(const at::Tensor& metric_sums) {
  const at::Tensor host = metric_sums.to(torch::kCPU, torch::kFloat64).contiguous();
  if (host.numel() != DpoMetricSums::kNumFields) Fail("ReadMetricSums", "expected DpoMetricSums::kNumFields values");
  DpoMetricSums sums;
  std::copy_n(host.data_ptr<double>(), sums.values.size(), sums.values.begin());
  return sums;
}

DpoLossResult ComputeDpoLoss(const DpoLossOptions& o, const SequenceLogps& policy,
                             const std::optional<ReferenceLogps>& reference) {
  o.Validate();
  CheckPolicy(policy);
  const auto [chosen_logps, rejected_logps] = Halves(SequenceLogpSums(policy, o.ld_alpha));
  const auto [ref_chosen, ref_rejected] = ReferenceFor(o, reference, chosen_logps);
  PairTerms t{o, policy};
  t.chosen_logps = chosen_logps;
  t.rejected_logps = rejected_logps;
  t.ref_chosen = ref_chosen;
  t.ref_rejected = ref_rejected;
  t.chosen_logratios = chosen_logps - ref_chosen;
  t.rejected_logratios = rejected_logps - ref_rejected;
  t.chosen_scores = Score(o, t.chosen_logratios);
  t.rejected_scores = Score(o, t.rejected_logratios);
  t.delta_score = t.chosen_scores - t.rejected_scores;
  std::tie(t.chosen_count, t.rejected_count) = Halves(policy.completion_tokens.clamp_min(1.0));

  const at::Tensor wpo_weights = o.use_weighting ? WpoWeights(policy) : at::Tensor();
  at::Tensor loss;
  for (size_t i = 0; i < o.loss_type.size(); ++i) {
    at::Tensor per_pair = kPairLosses[static_cast<size_t>(o.loss_type[i])](t);
    if (o.use_weighting) per_pair = per_pair * wpo_weights;
    const at::Tensor term = per_pair.mean() * (o.loss_weights ? (*o.loss_weights)[i] : 1.0);
    loss = loss.defined() ? loss + term : term;
  }

  DpoLossResult result;
  result.loss = loss;
  result.chosen_rewards = o.beta * t.chosen_logratios.detach();
  result.rejected_rewards = o.beta * t.rejected_logratios.detach();
  result.metric_sums = MetricSums(t, result.chosen_rewards, result.rejected_rewards);
  return result;
}

}  // namespace dpo
