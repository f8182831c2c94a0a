#include "common/config/model_config.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/util/error.h"
#include "common/util/mapped_file.h"

namespace dpo {
namespace {

using nlohmann::json;

std::string Context(std::string_view source, std::string_view field) {
  return std::string(source) + ": field '" + std::string(field) + "'";
}

// A field is absent when missing or null (transformers writes e.g. "sliding_window": null).
const json* Find(const json& obj, std::string_view field) {
  auto it = obj.find(std::string(field));
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t GetInt(const json& obj, std::string_view field, std::string_view source, const int64_t* fallback) {
  const json* v = Find(obj, field);
  if (v == nullptr) {
    if (fallback == nullptr) Fail(Context(source, field), "missing (required)");
    return *fallback;
  }
  if (!v->is_number_integer()) {
    Fail(Context(source, field), "expected an integer, got " + v->dump());
  }
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t{INT64_MAX}) {
    Fail(Context(source, field), "out of range: " + v->dump());
  }
  return v->get<int64_t>();
}

int64_t RequireInt(const json& obj, std::string_view field, std::string_view source) {
  return GetInt(obj, field, source, nullptr);
}

int64_t IntOr(const json& obj, std::string_view field, std::string_view source, int64_t fallback) {
  return GetInt(obj, field, source, &fallback);
}

double DoubleOr(const json& obj, std::string_view field, std::string_view source, double fallback) {
  const json* v = Find(obj, field);
  if (v == nullptr) return fallback;
  if (!v->is_number()) Fail(Context(source, field), "expected a number, got " + v->dump());
  return v->get<double>();
}

bool BoolOr(const json& obj, std::string_view field, std::string_view source, bool fallback) {
  const json* v = Find(obj, field);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) Fail(Context(source, field), "expected true/false, got " + v->dump());
  return v->get<bool>();
}

std::string StringOr(const json& obj, std::string_view field, std::string_view source, const std::string& fallback) {
  const json* v = Find(obj, field);
  if (v == nullptr) return fallback;
  if (!v->is_string()) Fail(Context(source, field), "expected a string, got " + v->dump());
  return v->get<std::string>();
}

// RoPE settings: transformers 5 writes "rope_parameters" {rope_type, rope_theta, ...}; older
// files have a top-level "rope_theta" and an optional "rope_scaling" {type|rope_type, ...}.
void ParseRope(const json& root, std::string_view source, ModelConfig& c) {
  c.rope_theta = DoubleOr(root, "rope_theta", source, 10000.0);
  const json* params = Find(root, "rope_parameters");
  std::string params_field = "rope_parameters";
  if (params == nullptr) {
    params = Find(root, "rope_scaling");
    params_field = "rope_scaling";
  }
  if (params == nullptr) return;
  if (!params->is_object()) {
    Fail(Context(source, params_field), "expected an object, got " + params->dump());
  }
  std::string ctx = std::string(source) + ": " + params_field;
  c.rope_theta = DoubleOr(*params, "rope_theta", ctx, c.rope_theta);
  c.rope_type = StringOr(*params, "rope_type", ctx, StringOr(*params, "type", ctx, "default"));
  c.rope_factor = DoubleOr(*params, "factor", ctx, 1.0);
  c.rope_low_freq_factor = DoubleOr(*params, "low_freq_factor", ctx, 1.0);
  c.rope_high_freq_factor = DoubleOr(*params, "high_freq_factor", ctx, 4.0);
  c.rope_original_max_position_embeddings =
      IntOr(*params, "original_max_position_embeddings", ctx, c.max_position_embeddings);
}

// The most parameters a config may imply: 10^13 is 40 TB of fp32 weights, beyond any cluster
// this service runs on, so a larger count is a typo or an attack, refused before allocation.
constexpr double kMaxParameters = 1e13;

// int64 arithmetic that records overflow instead of wrapping (config.json sizes may be absurd).
struct CheckedInt {
  int64_t value = 0;
  bool overflow = false;
  // Implicit, as double's is: CountParameters below is written once for both number types.
  CheckedInt(int64_t v = 0, bool o = false) : value(v), overflow(o) {}  // NOLINT(google-explicit-constructor)
  friend CheckedInt operator+(CheckedInt a, CheckedInt b) {
    int64_t r = 0;
    bool o = __builtin_add_overflow(a.value, b.value, &r);
    return {r, a.overflow || b.overflow || o};
  }
  friend CheckedInt operator*(CheckedInt a, CheckedInt b) {
    int64_t r = 0;
    bool o = __builtin_mul_overflow(a.value, b.value, &r);
    return {r, a.overflow || b.overflow || o};
  }
};

// The parameter count of `c` in number type T: exact in CheckedInt, never overflowing in double.
template <typename T>
T CountParameters(const ModelConfig& c) {
  const T h = c.hidden_size, i = c.intermediate_size, head_dim = c.head_dim;
  const T q = static_cast<T>(c.num_attention_heads) * head_dim;
  const T kv = static_cast<T>(c.num_key_value_heads) * head_dim;
  T layer = h * q * 2 + h * kv * 2 + h * i * 3 + h * 2;
  if (c.qkv_bias) layer = layer + q + kv * 2;
  if (c.o_bias) layer = layer + h;
  if (c.mlp_bias) layer = layer + i * 2 + h;
  if (c.qk_norm) layer = layer + head_dim * 2;
  const T embed = static_cast<T>(c.vocab_size) * h;
  T total = embed + h + static_cast<T>(c.num_hidden_layers) * layer;
  if (!c.tie_word_embeddings) total = total + embed;
  return total;
}

// Refuses a config implying more than kMaxParameters, naming the size field most to blame: the
// one whose reduction to 1 shrinks the count most.
void CheckParameterCount(const ModelConfig& c, std::string_view source) {
  const double count = CountParameters<double>(c);
  if (count <= kMaxParameters) return;
  int64_t ModelConfig::*const fields[] = {
      &ModelConfig::vocab_size,        &ModelConfig::hidden_size,         &ModelConfig::intermediate_size,
      &ModelConfig::num_hidden_layers, &ModelConfig::num_attention_heads, &ModelConfig::num_key_value_heads,
      &ModelConfig::head_dim};
  const char* names[] = {"vocab_size",          "hidden_size",         "intermediate_size", "num_hidden_layers",
                         "num_attention_heads", "num_key_value_heads", "head_dim"};
  size_t blamed = 0;
  double smallest = count;
  for (size_t f = 0; f < std::size(fields); ++f) {
    ModelConfig reduced = c;
    reduced.*fields[f] = 1;
    const double rest = CountParameters<double>(reduced);
    if (rest < smallest) {
      smallest = rest;
      blamed = f;
    }
  }
  char figures[128];
  std::snprintf(figures, sizeof figures, "about %.3g parameters, more than the limit of %.0e", count, kMaxParameters);
  Fail(Context(source, names[blamed]),
       std::to_string(c.*fields[blamed]) + " is too large: the config implies " + figures, ErrorCode::kBadModel);
}

// The window as transformers applies it. Mistral: on every layer, sliding_window (default 4096,
// null: none). Qwen2/Qwen3: only with use_sliding_window, and only on the layers layer_types marks
// "sliding_attention", which default to those from max_window_layers (default 28) on.
void ParseSlidingWindow(const json& root, std::string_view source, ModelConfig& c) {
  constexpr int64_t kDefaultWindow = 4096;  // MistralConfig / Qwen2Config / Qwen3Config
  const bool qwen = c.model_type == "qwen2" || c.model_type == "qwen3";
  const bool enabled = c.model_type == "mistral" || (qwen && BoolOr(root, "use_sliding_window", source, false));
  const bool null_window = root.contains("sliding_window") && root["sliding_window"].is_null();
  c.sliding_window = enabled && !null_window ? IntOr(root, "sliding_window", source, kDefaultWindow) : 0;
  c.max_window_layers = 0;
  if (!qwen || c.sliding_window == 0) return;
  c.max_window_layers = IntOr(root, "max_window_layers", source, 28);
  const json* types = Find(root, "layer_types");
  if (types == nullptr) return;
  // Explicit layer_types win over max_window_layers. We model full layers, then windowed ones.
  if (!types->is_array()) Fail(Context(source, "layer_types"), "expected a list of strings");
  size_t first_sliding = types->size();
  for (size_t i = 0; i < types->size(); ++i) {
    const json& type = (*types)[i];
    if (type != "sliding_attention" && type != "full_attention") {
      Fail(Context(source, "layer_types"), "unsupported entry " + type.dump());
    }
    if (type == "sliding_attention" && first_sliding == types->size()) first_sliding = i;
    if (type == "full_attention" && first_sliding < i) {
      Fail(Context(source, "layer_types"), "full_attention after sliding_attention (layer " + std::to_string(i) +
                                               ") is not supported: windowed layers must come last");
    }
  }
  c.max_window_layers = static_cast<int64_t>(first_sliding);
}

const char* ArchitectureOf(const std::string& model_type) {
  if (model_type == "llama") return "LlamaForCausalLM";
  if (model_type == "mistral") return "MistralForCausalLM";
  if (model_type == "qwen2") return "Qwen2ForCausalLM";
  return "Qwen3ForCausalLM";
}

}  // namespace

ModelConfig ModelConfig::FromJson(std::string_view text, std::string_view source_name) {
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) Fail(source_name, "not valid JSON");
  if (!root.is_object()) Fail(source_name, "expected a JSON object at the top level");
  std::string_view src = source_name;

  ModelConfig c;
  c.source_json = std::string(text);
  const json* type = Find(root, "model_type");
  if (type == nullptr) Fail(Context(src, "model_type"), "missing (required)");
  if (!type->is_string()) Fail(Context(src, "model_type"), "expected a string");
  c.model_type = type->get<std::string>();
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2" && c.model_type != "qwen3") {
    Fail(Context(src, "model_type"), "unsupported '" + c.model_type + "' (supported: llama, mistral, qwen2, qwen3)");
  }
  std::string act = StringOr(root, "hidden_act", src, "silu");
  if (act != "silu") Fail(Context(src, "hidden_act"), "only 'silu' is supported, got '" + act + "'");

  c.vocab_size = RequireInt(root, "vocab_size", src);
  c.hidden_size = RequireInt(root, "hidden_size", src);
  c.intermediate_size = RequireInt(root, "intermediate_size", src);
  c.num_hidden_layers = RequireInt(root, "num_hidden_layers", src);
  c.num_attention_heads = RequireInt(root, "num_attention_heads", src);
  c.num_key_value_heads = IntOr(root, "num_key_value_heads", src, c.num_attention_heads);
  int64_t default_head_dim = c.model_type == "qwen3"     ? 128
                             : c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads
                                                         : 0;
  c.head_dim = IntOr(root, "head_dim", src, default_head_dim);
  c.max_position_embeddings = IntOr(root, "max_position_embeddings", src, 2048);
  c.rms_norm_eps = DoubleOr(root, "rms_norm_eps", src, 1e-6);
  c.initializer_range = DoubleOr(root, "initializer_range", src, 0.02);
  c.tie_word_embeddings = BoolOr(root, "tie_word_embeddings", src, false);
  bool attention_bias = BoolOr(root, "attention_bias", src, false);
  if (c.model_type == "llama" || c.model_type == "qwen3") {
    c.qkv_bias = c.o_bias = attention_bias;
  } else if (c.model_type == "qwen2") {
    c.qkv_bias = true;
  }
  c.mlp_bias = c.model_type == "llama" && BoolOr(root, "mlp_bias", src, false);
  c.qk_norm = c.model_type == "qwen3";
  ParseSlidingWindow(root, src, c);
  ParseRope(root, src, c);
  const char* dtype_field = Find(root, "dtype") != nullptr ? "dtype" : "torch_dtype";
  c.dtype = StringOr(root, dtype_field, src, "");
  if (!c.dtype.empty() && c.dtype != "float32" && c.dtype != "bfloat16" && c.dtype != "float16") {
    Fail(Context(src, dtype_field), "expected float32, bfloat16 or float16, got '" + c.dtype + "'");
  }
  c.Validate(src);
  return c;
}

ModelConfig ModelConfig::FromJsonFile(const std::string& path) {
  const MappedFile file(path);  // refuses a FIFO or device without blocking
  return FromJson(file.view(), path);
}

void ModelConfig::Validate(std::string_view source) const {
  auto positive = [&](int64_t v, std::string_view field) {
    if (v <= 0) Fail(Context(source, field), "must be positive, got " + std::to_string(v));
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(max_position_embeddings, "max_position_embeddings");
  if (model_type != "qwen3" && hidden_size % num_attention_heads != 0) {
    Fail(Context(source, "hidden_size"), std::to_string(hidden_size) + " is not divisible by num_attention_heads " +
                                             std::to_string(num_attention_heads));
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    Fail(Context(source, "num_key_value_heads"), std::to_string(num_key_value_heads) +
                                                     " does not divide num_attention_heads " +
                                                     std::to_string(num_attention_heads));
  }
  if (head_dim % 2 != 0) {
    Fail(Context(source, "head_dim"), "must be even for rotary embeddings, got " + std::to_string(head_dim));
  }
  if (!(rms_norm_eps > 0)) Fail(Context(source, "rms_norm_eps"), "must be positive");
  if (!(initializer_range >= 0)) Fail(Context(source, "initializer_range"), "must be >= 0");
  if (sliding_window < 0) Fail(Context(source, "sliding_window"), "must be >= 0");
  if (max_window_layers < 0) Fail(Context(source, "max_window_layers"), "must be >= 0");
  if (!(rope_theta > 0)) Fail(Context(source, "rope_theta"), "must be positive");
  if (rope_type != "default" && rope_type != "linear" && rope_type != "llama3") {
    Fail(Context(source, "rope_type"), "unsupported '" + rope_type + "' (supported: default, linear, llama3)");
  }
  if (rope_type != "default" && !(rope_factor > 0)) {
    Fail(Context(source, "factor"), "rope scaling factor must be positive");
  }
  if (rope_type == "llama3") {
    if (!(rope_high_freq_factor > rope_low_freq_factor) || !(rope_low_freq_factor > 0)) {
      Fail(Context(source, "high_freq_factor"),
           "llama3 rope needs high_freq_factor > "
           "low_freq_factor > 0");
    }
    positive(rope_original_max_position_embeddings, "original_max_position_embeddings");
  }
  CheckParameterCount(*this, source);
  // What each model_type can express in config.json (so ToJson round-trips).
  bool ok = true;
  if (model_type == "llama") ok = qkv_bias == o_bias && !qk_norm;
  if (model_type == "qwen3") ok = qkv_bias == o_bias && qk_norm && !mlp_bias;
  if (model_type == "qwen2") ok = qkv_bias && !o_bias && !qk_norm && !mlp_bias;
  if (model_type == "mistral") ok = !qkv_bias && !o_bias && !qk_norm && !mlp_bias;
  if (model_type != "llama" && model_type != "mistral" && model_type != "qwen2" && model_type != "qwen3") {
    Fail(Context(source, "model_type"), "unsupported '" + model_type + "'");
  }
  if (!ok) {
    Fail(Context(source, "model_type"), "bias/qk_norm flags do not match what '" + model_type + "' expresses");
  }
}

std::string ModelConfig::ToJson(std::string_view dtype) const {
  json root = json::object();
  if (!source_json.empty()) {
    json parsed = json::parse(source_json, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_object()) root = std::move(parsed);
  }
  if (!root.contains("architectures")) root["architectures"] = {ArchitectureOf(model_type)};
  root["model_type"] = model_type;
  root["vocab_size"] = vocab_size;
  root["hidden_size"] = hidden_size;
  root["intermediate_size"] = intermediate_size;
  root["num_hidden_layers"] = num_hidden_layers;
  root["num_attention_heads"] = num_attention_heads;
  root["num_key_value_heads"] = num_key_value_heads;
  root["head_dim"] = head_dim;
  root["max_position_embeddings"] = max_position_embeddings;
  root["rms_norm_eps"] = rms_norm_eps;
  root["initializer_range"] = initializer_range;
  root["tie_word_embeddings"] = tie_word_embeddings;
  root["hidden_act"] = "silu";
  if (model_type == "llama" || model_type == "qwen3") root["attention_bias"] = qkv_bias;
  if (model_type == "llama") root["mlp_bias"] = mlp_bias;
  if (model_type == "mistral") root["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json();
  if (model_type == "qwen2" || model_type == "qwen3") {
    // layer_types is derived again from max_window_layers, so the two cannot disagree.
    root.erase("layer_types");
    root["use_sliding_window"] = sliding_window > 0;
    if (sliding_window > 0) {
      root["sliding_window"] = sliding_window;
      root["max_window_layers"] = max_window_layers;
    }
  }
  json rope = {{"rope_type", rope_type}, {"rope_theta", rope_theta}};
  if (rope_type != "default") rope["factor"] = rope_factor;
  if (rope_type == "llama3") {
    rope["low_freq_factor"] = rope_low_freq_factor;
    rope["high_freq_factor"] = rope_high_freq_factor;
    rope["original_max_position_embeddings"] = rope_original_max_position_embeddings;
  }
  root.erase("rope_scaling");
  root.erase("rope_theta");
  root["rope_parameters"] = rope;
  const std::string stored = dtype.empty() ? this->dtype : std::string(dtype);
  if (!stored.empty()) {
    root.erase("torch_dtype");
    root["dtype"] = stored;
  }
  return root.dump(2) + "\n";
}

int64_t ModelConfig::NumParameters() const {
  const CheckedInt total = CountParameters<CheckedInt>(*this);
  if (total.overflow) Fail("model config", "parameter count overflows int64 (sizes too large)");
  return total.value;
}

}  // namespace dpo
