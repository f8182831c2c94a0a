#include "common/loss/sequence_logps.h"

#include <string>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include "common/util/error.h"

namespace dpo {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::string Shape(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// Checks the shapes and the labels of the scored positions; returns the flat indices (into the
// [B*T] rows of hidden) of the scored positions and their labels.
struct ScoredPositions {
  at::Tensor rows;        // [N] int64 indices b*T + t of the positions that predict a completion token
  at::Tensor targets;     // [N] int64 labels input_ids[b, t+1]
  at::Tensor out_index;   // [N] int64 indices b*(T-1) + t into the flattened [B, T-1] outputs
  at::Tensor label_mask;  // [B, T-1] bool
};

ScoredPositions FindScoredPositions(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& input_ids,
                                    const at::Tensor& completion_mask) {
  constexpr const char* kWhere = "common/loss/sequence_logps.cc";
  if (hidden.dim() != 3 || !hidden.is_floating_point())
    Fail(kWhere, "hidden must be a float [B, T, H] tensor, got " + Shape(hidden));
  if (weight.dim() != 2 || weight.size(1) != hidden.size(2) || !weight.is_floating_point())
    Fail(kWhere, "lm_head weight must be a float [V, H] tensor with H = " + std::to_string(hidden.size(2)) + ", got " +
                     Shape(weight));
  const int64_t batch = hidden.size(0), time = hidden.size(1);
  if (input_ids.sizes() != at::IntArrayRef{batch, time} || input_ids.is_floating_point())
    Fail(kWhere, "input_ids must be an integer [B, T] = [" + std::to_string(batch) + ", " + std::to_string(time) +
                     "] tensor, got " + Shape(input_ids));
  if (completion_mask.sizes() != input_ids.sizes())
    Fail(kWhere, "completion_mask must match input_ids " + Shape(input_ids) + ", got " + Shape(completion_mask));
  if (time < 2) Fail(kWhere, "sequences need at least 2 tokens, got T = " + std::to_string(time));

  ScoredPositions p;
  p.label_mask = completion_mask.slice(1, 1).ne(0);
  const at::Tensor flat = p.label_mask.reshape({-1}).nonzero().squeeze(1);  // b*(T-1) + t
  p.out_index = flat;
  p.rows = flat.div(time - 1, "floor") * time + flat.remainder(time - 1);
  p.targets = input_ids.slice(1, 1).reshape({-1}).index_select(0, flat).to(torch::kLong);
  if (p.targets.numel() > 0) {
    const int64_t lo = p.targets.min().item<int64_t>(), hi = p.targets.max().item<int64_t>();
    if (lo < 0 || hi >= weight.size(0))
      Fail(kWhere, "input_ids: completion label outside the vocabulary [0, " + std::to_string(weight.size(0)) +
                       "): " + std::to_string(lo < 0 ? lo : hi));
  }
  return p;
}

// a · b in fp32 for a and b already in `dtype` (fp32, or a 16-bit type: see gemm_dtype).
at::Tensor MatmulFp32(const at::Tensor& a, const at::Tensor& b, at::ScalarType dtype) {
  if (dtype == torch::kFloat) return at::mm(a, b);
  if (a.is_cuda()) return at::mm(a, b, torch::kFloat);
  return at::mm(a, b).to(torch::kFloat);
}

// acc += a · b (acc fp32; a and b in `dtype`). In fp32 it runs in place: an acc-sized temporary
// would be as large as the lm_head weight, per chunk. A 16-bit GEMM needs that temporary (the
// mixed-dtype addmm wants its accumulator in the inputs' dtype), which on a GPU is affordable.
void AddMatmulFp32(at::Tensor& acc, const at::Tensor& a, const at::Tensor& b, at::ScalarType dtype) {
  if (dtype == torch::kFloat) {
    acc.addmm_(a, b);
  } else {
    acc.add_(MatmulFp32(a, b, dtype));
  }
}

// Σ_v a[n, v] * b[n, v] without a [N, V] temporary.
at::Tensor RowDot(const at::Tensor& a, const at::Tensor& b) {
  return at::bmm(a.unsqueeze(1), b.unsqueeze(2)).view({-1});
}

// Outputs: logps (differentiable), entropy, log_sum_sq_probs, mean_logits, is_top1.
class ChunkedLogpsFunction : public torch::autograd::Function<ChunkedLogpsFunction> {
 public:
  // hidden: [N, H] rows to score, weight: [V, H], targets: [N] int64, gemm_dtype: a ScalarType.
  // Autocast is kept out: every dtype here is chosen explicitly.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                               const at::Tensor& targets, int64_t chunk_tokens, int64_t gemm_dtype) {
    torch::NoGradGuard no_grad;
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto dtype = static_cast<at::ScalarType>(gemm_dtype);
    const int64_t n = hidden.size(0), vocab = weight.size(0);
    const auto f32 = hidden.options().dtype(torch::kFloat);
    at::Tensor logps = torch::empty({n}, f32), entropy = torch::empty({n}, f32);
    at::Tensor log_sum_sq = torch::empty({n}, f32), mean_logits = torch::empty({n}, f32);
    at::Tensor lse = torch::empty({n}, f32);
    at::Tensor is_top1 = torch::empty({n}, f32.dtype(torch::kBool));
    const at::Tensor w_t = weight.to(dtype).t();
    // Σ_v z_v = h · Σ_v W_v: the mean logit without another pass over the logits.
    const at::Tensor w_sum = weight.sum(0, /*keepdim=*/false, torch::kFloat);
    for (int64_t start = 0; start < n; start += chunk_tokens) {
      const int64_t end = std::min(n, start + chunk_tokens);
      const at::Tensor h = hidden.slice(0, start, end).to(torch::kFloat);
      const at::Tensor tgt = targets.slice(0, start, end);
      at::Tensor z = MatmulFp32(h.to(dtype), w_t, dtype);  // [c, V] fp32 logits
      const at::Tensor target_z = z.gather(1, tgt.unsqueeze(1)).squeeze(1);
      // max(dim) returns the first maximum, so a tie with an earlier token is not top-1 (as TRL).
      const auto [row_max, argmax] = z.max(1);
      // One exp pass: e = exp(z - max), p = e / Σe, log p = z - max - log Σe, both in place.
      z.sub_(row_max.unsqueeze(1));
      at::Tensor p = z.exp();
      const at::Tensor sum_e = p.sum(1);
      const at::Tensor log_sum_e = sum_e.log();
      const at::Tensor& log_p = z.sub_(log_sum_e.unsqueeze(1));
      p.div_(sum_e.unsqueeze(1));
      const at::Tensor chunk_lse = row_max + log_sum_e;
      entropy.slice(0, start, end).copy_(RowDot(p, log_p).neg_());
      log_sum_sq.slice(0, start, end).copy_(RowDot(p, p).log_());
      logps.slice(0, start, end).copy_(target_z - chunk_lse);
      lse.slice(0, start, end).copy_(chunk_lse);
      mean_logits.slice(0, start, end).copy_(at::mv(h, w_sum).div_(static_cast<double>(vocab)));
      is_top1.slice(0, start, end).copy_(argmax.eq(tgt));
    }
    ctx->save_for_backward({hidden, weight, targets, lse});
    ctx->saved_data["chunk_tokens"] = chunk_tokens;
    ctx->saved_data["gemm_dtype"] = gemm_dtype;
    ctx->mark_non_differentiable({entropy, log_sum_sq, mean_logits, is_top1});
    return {logps, entropy, log_sum_sq, mean_logits, is_top1};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &hidden = saved[0], &weight = saved[1], &targets = saved[2], &lse = saved[3];
    const int64_t chunk_tokens = ctx->saved_data["chunk_tokens"].toInt();
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["gemm_dtype"].toInt());
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const at::Tensor& grad_logps = grads[0];
    if (!grad_logps.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    const bool need_h = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const int64_t n = hidden.size(0);
    const at::Tensor w = weight.to(dtype);
    const at::Tensor g = grad_logps.to(torch::kFloat);
    const auto f32 = hidden.options().dtype(torch::kFloat);
    at::Tensor grad_h = need_h ? torch::empty({n, hidden.size(1)}, f32) : at::Tensor();
    at::Tensor grad_w = need_w ? torch::zeros(weight.sizes(), f32) : at::Tensor();
    for (int64_t start = 0; start < n; start += chunk_tokens) {
      const int64_t end = std::min(n, start + chunk_tokens);
      const at::Tensor h = hidden.slice(0, start, end).to(dtype);
      const at::Tensor gc = g.slice(0, start, end);
      // d logp_target / dz_v = onehot_v - p_v, scaled by the incoming grad of the token.
      at::Tensor dz = MatmulFp32(h, w.t(), dtype);
      dz.sub_(lse.slice(0, start, end).unsqueeze(1)).exp_().mul_(gc.neg().unsqueeze(1));
      dz.scatter_add_(1, targets.slice(0, start, end).unsqueeze(1), gc.unsqueeze(1));
      const at::Tensor dz_in = dz.to(dtype);
      if (need_h) grad_h.slice(0, start, end).copy_(MatmulFp32(dz_in, w, dtype));
      if (need_w) AddMatmulFp32(grad_w, dz_in.t(), h, dtype);
    }
    return {need_h ? grad_h.to(hidden.scalar_type()) : at::Tensor(),
            need_w ? grad_w.to(weight.scalar_type()) : at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Scatters per-position values [N] into a zero [B, T-1] tensor (differentiable w.r.t. values).
at::Tensor Scatter(const at::Tensor& values, const ScoredPositions& p) {
  const at::Tensor zeros = torch::zeros({p.label_mask.numel()}, values.options());
  return zeros.index_copy(0, p.out_index, values).view(p.label_mask.sizes());
}

}  // namespace

SequenceLogps ComputeSequenceLogps(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& input_ids,
                                   const at::Tensor& completion_mask, const SequenceLogpsOptions& options) {
  if (options.chunk_tokens <= 0)
    Fail("SequenceLogpsOptions.chunk_tokens", "must be positive, got " + std::to_string(options.chunk_tokens));
  const ScoredPositions p = FindScoredPositions(hidden, weight, input_ids, completion_mask);
  const at::Tensor rows = hidden.reshape({-1, hidden.size(2)}).index_select(0, p.rows.to(hidden.device()));
  const auto device = hidden.device().type();
  const at::ScalarType gemm_dtype = options.gemm_dtype.value_or(
      at::autocast::is_autocast_enabled(device) ? at::autocast::get_autocast_dtype(device) : torch::kFloat);
  const variable_list out =
      ChunkedLogpsFunction::apply(rows, weight, p.targets, options.chunk_tokens, static_cast<int64_t>(gemm_dtype));
  SequenceLogps s;
  s.token_logps = Scatter(out[0], p);
  s.token_entropy = Scatter(out[1], p);
  s.token_log_sum_sq_probs = Scatter(out[2], p);
  s.token_mean_logits = Scatter(out[3], p);
  s.token_is_top1 = Scatter(out[4], p);
  s.label_mask = p.label_mask;
  s.completion_tokens = completion_mask.ne(0).sum(1).to(torch::kFloat);
  return s;
}

SequenceLogps ComputeSequenceLogpsReference(const at::Tensor& hidden, const at::Tensor& weight,
                                            const at::Tensor& input_ids, const at::Tensor& completion_mask) {
  const ScoredPositions p = FindScoredPositions(hidden, weight, input_ids, completion_mask);
  const at::Tensor logits =
      at::matmul(hidden.slice(1, 0, hidden.size(1) - 1).to(torch::kFloat), weight.to(torch::kFloat).t());
  const at::Tensor mask = p.label_mask;
  const at::Tensor labels = input_ids.slice(1, 1).to(torch::kLong).masked_fill(~mask, 0).unsqueeze(2);
  const at::Tensor log_p = logits.log_softmax(2);
  SequenceLogps s;
  s.token_logps = log_p.gather(2, labels).squeeze(2).masked_fill(~mask, 0.0);
  {
    torch::NoGradGuard no_grad;
    const at::Tensor prob = log_p.exp();
    s.token_entropy = (prob * log_p).sum(2).neg().masked_fill(~mask, 0.0);
    s.token_log_sum_sq_probs = (prob * prob).sum(2).log().masked_fill(~mask, 0.0);
    s.token_mean_logits = logits.mean(2).masked_fill(~mask, 0.0);
    s.token_is_top1 = logits.argmax(2).eq(labels.squeeze(2)).logical_and(mask);
  }
  s.label_mask = mask;
  s.completion_tokens = completion_mask.ne(0).sum(1).to(torch::kFloat);
  return s;
}

}  // namespace dpo
