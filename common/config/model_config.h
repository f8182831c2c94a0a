// The architecture of a Llama-family decoder, read from and written to a Hugging Face
// config.json. Torch-free, in the config area: the parser is fuzzed, and the coordinator's memory
// plan reads a job's model through it without linking the model area.
//
// Covered model_type values: "llama" (Llama 2/3/3.1), "mistral", "qwen2" (q/k/v bias), "qwen3"
// (per-head q/k RMSNorm, head_dim from config). Anything else is rejected with a dpo::Error.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dpo {

struct ModelConfig {
  std::string model_type;  // "llama", "mistral", "qwen2" or "qwen3".
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  // Default: num_attention_heads (plain multi-head attention). Must divide num_attention_heads.
  int64_t num_key_value_heads = 0;
  // Default: hidden_size / num_attention_heads (Qwen3: 128, as transformers does).
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  // Std of the normal init of linear and embedding weights. Default: 0.02 (transformers).
  double initializer_range = 0.02;
  // lm_head shares the embedding matrix. Default: false (transformers' default for these types).
  bool tie_word_embeddings = false;
  // Bias on q/k/v projections (qwen2: always; llama: attention_bias; qwen3: attention_bias).
  bool qkv_bias = false;
  // Bias on o_proj (llama and qwen3 attention_bias only; never for qwen2).
  bool o_bias = false;
  // Bias on gate/up/down projections (llama mlp_bias).
  bool mlp_bias = false;
  // RMSNorm over head_dim on queries and keys before RoPE (qwen3).
  bool qk_norm = false;
  // Sliding-window attention (Mistral; Qwen2/Qwen3 with use_sliding_window): a query attends only
  // to the keys of its own sequence fewer than sliding_window positions before it, itself included
  // (transformers' sliding_window_causal_mask_function: kv_idx > q_idx - sliding_window). 0: none.
  // transformers' default when config.json lacks the key is 4096; an explicit null means none.
  int64_t sliding_window = 0;
  // The first decoder layer that uses the window; earlier layers attend to their whole sequence
  // (Qwen2/Qwen3's max_window_layers, or the first "sliding_attention" of layer_types). Default: 0,
  // every layer (Mistral).
  int64_t max_window_layers = 0;
  // The window of decoder layer `layer`: sliding_window, or 0 (none) below max_window_layers.
  int64_t WindowOf(int64_t layer) const { return layer >= max_window_layers ? sliding_window : 0; }

  // RoPE. rope_type is "default", "linear" or "llama3" (Llama 3.1 frequency scaling).
  std::string rope_type = "default";
  double rope_theta = 10000.0;
  double rope_factor = 1.0;                           // linear, llama3
  double rope_low_freq_factor = 1.0;                  // llama3
  double rope_high_freq_factor = 4.0;                 // llama3
  int64_t rope_original_max_position_embeddings = 0;  // llama3

  // The checkpoint's stored dtype ("float32", "bfloat16" or "float16") from config.json's
  // "dtype" (transformers 5) or "torch_dtype"; empty when absent. Lets a caller load in the
  // checkpoint's own precision.
  std::string dtype;

  // The config.json this was read from (empty for a config built in code). ToJson keeps its other
  // fields (token ids, architectures, ...) so a saved model round-trips through transformers.
  std::string source_json;

  // Parses config.json text. `source_name` names the file in errors. Throws dpo::Error naming
  // the source and field for a missing, mistyped or out-of-range field.
  static ModelConfig FromJson(std::string_view text, std::string_view source_name);
  static ModelConfig FromJsonFile(const std::string& path);

  // Checks the invariants (positive sizes, divisibility, supported rope type, at most 10^13
  // parameters, so no absurd config reaches an allocator). FromJson calls it; call it after
  // building a config in code. Throws dpo::Error naming `source_name` and the field (for too many
  // parameters, the size field whose reduction shrinks the count most).
  void Validate(std::string_view source_name) const;

  // config.json text that transformers loads. `dtype` ("float32", "bfloat16", "float16") is
  // written as the checkpoint's dtype when non-empty.
  std::string ToJson(std::string_view dtype = "") const;

  // Throws dpo::Error when the count overflows int64 (Validate rejects such configs first).
  int64_t NumParameters() const;
};

}  // namespace dpo
