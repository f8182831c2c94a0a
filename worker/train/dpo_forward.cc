#include "worker/train/dpo_forward.h"

#include <torch/torch.h>

#include "common/model/causal_lm.h"

namespace dpo {

namespace {

// Per-token outputs of packed rows [R, W-1] back in the padded layout [2B, T-1].
at::Tensor Unpack(const at::Tensor& packed, const at::Tensor& index) {
  at::Tensor flat = torch::cat({packed.reshape(-1), torch::zeros({1}, packed.options())});
  return flat.index_select(0, index.reshape(-1)).view(index.sizes());
}

}  // namespace

SequenceLogps ForwardLogps(CausalLM& model, const PairBatch& batch, const SequenceLogpsOptions& options) {
  at::Tensor hidden = model.Hidden(batch.input_ids, batch.position_ids, batch.spans);
  SequenceLogps out =
      ComputeSequenceLogps(hidden, model.lm_head_weight(), batch.input_ids, batch.completion_mask, options);
  if (!batch.packed()) return out;
  const at::Tensor& index = batch.unpack_index;
  out.token_logps = Unpack(out.token_logps, index);
  out.token_entropy = Unpack(out.token_entropy, index);
  out.token_log_sum_sq_probs = Unpack(out.token_log_sum_sq_probs, index);
  out.token_mean_logits = Unpack(out.token_mean_logits, index);
  out.token_is_top1 = Unpack(out.token_is_top1, index);
  out.label_mask = Unpack(out.label_mask, index);
  out.completion_tokens = batch.completion_tokens;
  return out;
}

ReferenceLogps ReferenceForward(CausalLM& reference, const PairBatch& batch, const SequenceLogpsOptions& options,
                                std::optional<double> ld_alpha) {
  at::Tensor sums;
  {
    // Inference mode skips autograd's bookkeeping entirely (faster than no_grad); the clone
    // below turns its result back into an ordinary tensor the loss may use.
    c10::InferenceMode inference;
    sums = SequenceLogpSums(ForwardLogps(reference, batch, options), ld_alpha);
  }
  reference.EndForward();
  return ReferenceLogps::FromSums(sums.clone());
}

}  // namespace dpo
