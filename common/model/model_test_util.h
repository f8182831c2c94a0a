// Tiny model configurations for tests: small enough to run in milliseconds, with GQA (4 heads,
// 2 KV heads) so every attention path is exercised.
#pragma once

#include <cstdint>
#include <string>

#include "common/config/model_config.h"

namespace dpo::testing {

// type: "llama", "mistral", "qwen2" (q/k/v biases) or "qwen3" (q/k norm, tied embeddings).
inline ModelConfig TinyConfig(const std::string& type, int64_t vocab_size = 97) {
  ModelConfig c;
  c.model_type = type;
  c.vocab_size = vocab_size;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  if (type == "qwen3") {
    c.qk_norm = true;
    c.head_dim = 16;
    c.tie_word_embeddings = true;
  }
  if (type == "qwen2") c.qkv_bias = true;
  return c;
}

}  // namespace dpo::testing
