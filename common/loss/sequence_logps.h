// Completion-token log-probabilities of a causal LM, computed from the final hidden states and
// the lm_head weight without ever holding the full-vocabulary logits of the whole batch.
//
// Contract (the same as TRL 1.16's fused LM head, trl/trainer/utils.py add_fused_lm_head):
//   position t of a row predicts input_ids[t+1]; it is scored only where completion_mask[t+1] != 0
//   (prompt and padding are masked). Every per-token output has shape [B, T-1] and is 0 where the
//   position is not scored. Logits are h·Wᵀ accumulated and kept in fp32, and the softmax runs in
//   fp32, whatever the dtype of hidden and weight (see SequenceLogpsOptions::gemm_dtype).
#pragma once

#include <cstdint>
#include <optional>

#include <ATen/core/Tensor.h>

namespace dpo {

struct SequenceLogpsOptions {
  // Scored positions per chunk: [chunk_tokens, V] fp32 buffers are the largest temporaries (two
  // live at once in forward: log p and p; one in backward). Default: 512, i.e. ~311 MB per buffer
  // at V=151936, while a 512 x H x V GEMM is still large enough to run at full speed.
  int64_t chunk_tokens = 512;
  // Input dtype of the four vocabulary-sized GEMMs (logits, their recomputation in backward, and
  // the hidden and weight gradients). Default (nullopt): the autocast dtype (bf16) while autocast
  // is on for hidden's device, as an autocast lm_head would use, else fp32. On CUDA a bf16 GEMM
  // runs on tensor cores and still accumulates and returns fp32; on the CPU its product is
  // rounded to bf16 before the fp32 softmax (no mixed-output GEMM there).
  std::optional<at::ScalarType> gemm_dtype;
};

// Per-token outputs of one forward pass. The rows are whatever the caller batched; the DPO loss
// expects [chosen..., rejected...].
struct SequenceLogps {
  at::Tensor token_logps;             // [B, T-1] fp32, log p(label); differentiable w.r.t. hidden, weight
  at::Tensor token_entropy;           // [B, T-1] fp32, -Σ_v p_v log p_v; no grad (a metric)
  at::Tensor token_log_sum_sq_probs;  // [B, T-1] fp32, log Σ_v p_v²; no grad (WPO weights)
  at::Tensor token_mean_logits;       // [B, T-1] fp32, Σ_v z_v / V; no grad (logits/* metrics)
  at::Tensor token_is_top1;           // [B, T-1] bool, label == first argmax; no grad (accuracy)
  at::Tensor label_mask;              // [B, T-1] bool, completion_mask[:, 1:] != 0
  at::Tensor completion_tokens;       // [B] fp32, completion_mask.sum(1) (unshifted, as TRL's ipo uses)
};

// Chunked computation through a custom autograd function: forward keeps only per-token scalars
// (log-sum-exp) and backward recomputes each chunk's logits to form (onehot - softmax) · grad.
// Only scored positions are projected. Gradients accumulate in fp32 and return in the input
// dtypes; a non-fp32 weight costs one fp32 copy of it during forward and during backward.
// hidden: [B, T, H] (any float dtype), weight: [V, H], input_ids: [B, T] integer,
// completion_mask: [B, T] (0/1, any dtype). Throws dpo::Error on bad shapes or labels outside [0, V).
SequenceLogps ComputeSequenceLogps(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& input_ids,
                                   const at::Tensor& completion_mask, const SequenceLogpsOptions& options = {});

// The same outputs from the full [B, T-1, V] fp32 logits and plain autograd (log_softmax, gather).
// For tests and small inputs only.
SequenceLogps ComputeSequenceLogpsReference(const at::Tensor& hidden, const at::Tensor& weight,
                                            const at::Tensor& input_ids, const at::Tensor& completion_mask);

}  // namespace dpo
