#include "worker/train/dpo_forward.h"

#include <torch/torch.h>

#include "common/model/causal_lm.h"

namespace dpo {

SequenceLogps ForwardLogps(CausalLM& model, const PairBatch& batch,
                           const SequenceLogpsOptions& options) {
  at::Tensor hidden = model.Hidden(batch.input_ids);
  return ComputeSequenceLogps(hidden, model.lm_head_weight(), batch.input_ids,
                              batch.completion_mask, options);
}

ReferenceLogps ReferenceForward(CausalLM& reference, const PairBatch& batch,
                                const SequenceLogpsOptions& options,
                                std::optional<double> ld_alpha) {
  torch::NoGradGuard no_grad;
  at::Tensor sums = SequenceLogpSums(ForwardLogps(reference, batch, options), ld_alpha);
  std::vector<at::Tensor> halves = sums.chunk(2, 0);
  return {halves[0], halves[1]};
}

}  // namespace dpo
