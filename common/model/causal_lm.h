// A Llama-family decoder-only language model in LibTorch (Llama 2/3/3.1, Mistral, Qwen2/2.5,
// Qwen3), built from a ModelConfig. Parameter names equal transformers' (model.embed_tokens.weight,
// model.layers.N.self_attn.q_proj.weight, ..., model.norm.weight, lm_head.weight), so
// named_parameters() maps 1:1 onto a Hugging Face state dict.
//
// Attention is at::scaled_dot_product_attention with is_causal=true and no padding mask: batches
// are right-padded, so every real token only attends to real tokens before it. Packed rows describe
// their attention with AttentionSpans instead. A sliding window (ModelConfig::sliding_window, on
// the layers WindowOf names) limits each query to its own sequence's last `window` positions,
// itself included, as transformers does, in both layouts: in a packed row a sequence's positions
// count from its start (a span with a prefix continues the prefix's). Dropout is off.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "common/config/model_config.h"
#include "common/model/attention_span.h"

namespace dpo {

class DecoderLayer;

// How Hidden runs its decoder layers, for callers that must act around each use of a layer's
// weights: sharded training (worker/shard/sharded_model.h) gathers them just before and frees
// them just after, in forward and again in backward. Without a runner, layers run in place.
class LayerRunner {
 public:
  using Block = std::function<torch::Tensor(const torch::Tensor&)>;
  virtual ~LayerRunner() = default;
  // Called once per Hidden, before the embedding is read.
  virtual void BeginForward() = 0;
  // Returns block(x) for decoder layer `index`, recomputing it in backward when `checkpoint`.
  // Called for index 0, 1, ... in order.
  virtual torch::Tensor Run(int64_t index, const Block& block, const torch::Tensor& x, bool checkpoint) = 0;
  // The caller of a forward without backward (eval, a reference) holds none of its tensors any
  // more: weights it gathered may go.
  virtual void EndForward() = 0;
};

class CausalLM : public torch::nn::Module {
 public:
  // Allocates uninitialized parameters of `options` (dtype, device); fill them with InitWeights
  // or by loading a checkpoint (common/model/pretrained.h). Throws dpo::Error if `config` is
  // invalid.
  CausalLM(const ModelConfig& config, const torch::TensorOptions& options);

  // Final-normed hidden states [B, T, H] for input_ids [B, T] (int64). position_ids [B, T] or
  // [1, T] (int64); Default (undefined): 0..T-1 for every row. Log-probs are computed from this and
  // lm_head_weight() in chunks, never materializing [B, T, V] logits.
  // spans: how packed rows attend (padding-free batches, see AttentionSpan); they must tile every
  // row, in row order and left to right. Default (empty): plain causal attention over each row.
  // Throws dpo::Error on bad shapes or spans.
  torch::Tensor Hidden(const torch::Tensor& input_ids, const torch::Tensor& position_ids = {},
                       const std::vector<AttentionSpan>& spans = {});
  // Full logits [B, T, V] (Hidden times lm_head weight), in the model's dtype.
  torch::Tensor Logits(const torch::Tensor& input_ids, const torch::Tensor& position_ids = {});

  // [V, H]: lm_head.weight, or the embedding matrix when tie_word_embeddings.
  torch::Tensor lm_head_weight() const;
  const ModelConfig& config() const { return config_; }

  // How rows with spans attend: one attention call per span, or one call over the whole batch
  // with a [B, 1, T, T] mask. Default kAuto: the mask on CUDA, where one kernel beats a launch
  // per span; per span elsewhere, where the calls cost little and skip the masked-out work.
  enum class SpanAttention { kAuto, kPerSpan, kMask };
  void SetSpanAttention(SpanAttention mode) { span_attention_ = mode; }

  // Recompute each decoder layer in backward instead of keeping its activations. Default: off.
  void SetActivationCheckpointing(bool on) { checkpointing_ = on; }
  bool activation_checkpointing() const { return checkpointing_; }

  // Installs `runner` for every later Hidden call (nullptr: layers run in place).
  void SetLayerRunner(std::shared_ptr<LayerRunner> runner) { runner_ = std::move(runner); }
  // Ends a forward pass that has no backward: see LayerRunner::EndForward. Call it once the
  // outputs (and the lm_head weight) are no longer used.
  void EndForward() {
    if (runner_) runner_->EndForward();
  }

  // transformers' init: linear and embedding weights ~ N(0, initializer_range), biases 0, norm
  // weights 1. Drawn on the CPU in fp32 from a generator seeded with `seed`, then copied, so the
  // same seed gives the same weights on every device and dtype.
  void InitWeights(uint64_t seed);

 private:
  ModelConfig config_;
  bool checkpointing_ = false;
  SpanAttention span_attention_ = SpanAttention::kAuto;
  std::shared_ptr<LayerRunner> runner_;
  torch::Tensor embed_;     // [V, H]
  torch::Tensor norm_;      // [H]
  torch::Tensor lm_head_;   // [V, H]; undefined when tied.
  torch::Tensor inv_freq_;  // [head_dim / 2] fp32 RoPE frequencies (not a parameter).
  std::vector<std::shared_ptr<DecoderLayer>> layers_;
};

}  // namespace dpo
