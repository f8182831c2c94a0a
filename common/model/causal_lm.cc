#include "common/model/causal_lm.h"

#include <cmath>
#include <string>

#include <torch/torch.h>

#include "common/model/layer_checkpoint.h"
#include "common/util/error.h"

namespace dpo {
namespace {

// A module holding one "weight" (and optionally "bias") parameter, named as in transformers.
class Linear : public torch::nn::Module {
 public:
  Linear(int64_t in, int64_t out, bool bias, const torch::TensorOptions& options) {
    weight = register_parameter("weight", torch::empty({out, in}, options));
    if (bias) this->bias = register_parameter("bias", torch::empty({out}, options));
  }
  torch::Tensor operator()(const torch::Tensor& x) const { return torch::linear(x, weight, bias); }
  torch::Tensor weight, bias;
};

// RMSNorm as transformers computes it: in fp32, cast back, then scale by the weight.
class RMSNorm : public torch::nn::Module {
 public:
  RMSNorm(int64_t dim, double eps, const torch::TensorOptions& options) : eps_(eps) {
    weight = register_parameter("weight", torch::empty({dim}, options));
  }
  torch::Tensor operator()(const torch::Tensor& x) const { return Apply(x, weight, eps_); }
  static torch::Tensor Apply(const torch::Tensor& x, const torch::Tensor& w, double eps) {
    torch::Tensor h = x.to(torch::kFloat32);
    h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
    return w * h.to(x.scalar_type());
  }
  torch::Tensor weight;

 private:
  double eps_;
};

torch::Tensor RotateHalf(const torch::Tensor& x) {
  int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// RoPE inverse frequencies in fp32, computed with the same ops as transformers'
// _compute_default_rope_parameters / _compute_llama3_parameters.
torch::Tensor InverseFrequencies(const ModelConfig& c) {
  const int64_t dim = c.head_dim;
  torch::Tensor exponent = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
  torch::Tensor inv = 1.0 / torch::pow(c.rope_theta, exponent);
  if (c.rope_type == "linear") return inv / c.rope_factor;
  if (c.rope_type != "llama3") return inv;
  const double old_len = static_cast<double>(c.rope_original_max_position_embeddings);
  const double low_wavelen = old_len / c.rope_low_freq_factor;
  const double high_wavelen = old_len / c.rope_high_freq_factor;
  torch::Tensor wavelen = 2 * M_PI / inv;
  torch::Tensor scaled = torch::where(wavelen > low_wavelen, inv / c.rope_factor, inv);
  torch::Tensor smooth =
      (old_len / wavelen - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
  torch::Tensor smoothed = (1 - smooth) * scaled / c.rope_factor + smooth * scaled;
  torch::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return torch::where(medium, smoothed, scaled);
}

}  // namespace

// How one decoder layer attends. rows: the spans of each packed row, left to right (empty: every
// row is one sequence, plain causal). window: the layer's sliding window (0: none). mask: when
// defined, [B|1, 1, T, T] bool (true = attend) for one attention call over the whole batch;
// otherwise packed rows attend one call per span.
struct AttentionLayout {
  std::vector<std::vector<AttentionSpan>> rows;
  int64_t window = 0;
  torch::Tensor mask;
};

// Checks that `spans` tile the [rows, width] batch and groups them per row.
static std::vector<std::vector<AttentionSpan>> SpansByRow(const std::vector<AttentionSpan>& spans, int64_t rows,
                                                          int64_t width) {
  std::vector<std::vector<AttentionSpan>> by_row(static_cast<size_t>(rows));
  for (const AttentionSpan& s : spans) {
    const bool in_batch = s.row >= 0 && s.row < rows;
    const auto* row = in_batch ? &by_row[static_cast<size_t>(s.row)] : nullptr;
    const bool valid = in_batch && s.length > 0 && s.prefix_length >= 0 && s.prefix_offset >= 0 &&
                       s.prefix_offset + s.prefix_length <= s.offset &&
                       s.offset == (row->empty() ? 0 : row->back().offset + row->back().length);
    if (!valid) {
      Fail("CausalLM::Hidden", "attention span (row " + std::to_string(s.row) + ", offset " + std::to_string(s.offset) +
                                   ", length " + std::to_string(s.length) + ") does not continue its row's tiling");
    }
    by_row[static_cast<size_t>(s.row)].push_back(s);
  }
  for (const auto& row : by_row) {
    if (row.empty() || row.back().offset + row.back().length != width) {
      Fail("CausalLM::Hidden", "attention spans must cover every row exactly");
    }
  }
  return by_row;
}

// [queries, prefix + queries] bool, true = attend: query i stands at position prefix + i of its
// sequence, key j at position j. Causal (j <= prefix + i) and, with a window, the sliding window
// exactly as transformers' sliding_window_causal_mask_function (kv_idx > q_idx - sliding_window):
// a query sees itself and the window - 1 positions before it.
static torch::Tensor CausalMask(int64_t queries, int64_t prefix, int64_t window, const torch::TensorOptions& options) {
  torch::Tensor mask = torch::ones({queries, prefix + queries}, options.dtype(torch::kBool)).tril(prefix);
  return window > 0 ? mask.triu(prefix - window + 1) : mask;
}

// The [B, 1, T, T] mask of tiled spans: causal inside a span, plus the span's whole prefix; with a
// window, only keys fewer than `window` positions back in the query's own sequence (prefix + span).
static torch::Tensor SpanMask(const std::vector<std::vector<AttentionSpan>>& rows, int64_t width, int64_t window,
                              c10::Device device) {
  const auto b = static_cast<int64_t>(rows.size());
  torch::Tensor span_id = torch::empty({b, width}, torch::kInt64);
  torch::Tensor prefix_begin = torch::empty({b, width}, torch::kInt64);
  torch::Tensor prefix_end = torch::empty({b, width}, torch::kInt64);
  torch::Tensor sequence_position = torch::empty({b, width}, torch::kInt64);
  auto id = span_id.accessor<int64_t, 2>();
  auto begin = prefix_begin.accessor<int64_t, 2>();
  auto end = prefix_end.accessor<int64_t, 2>();
  auto position = sequence_position.accessor<int64_t, 2>();
  for (int64_t r = 0; r < b; ++r) {
    int64_t index = 0;
    for (const AttentionSpan& s : rows[static_cast<size_t>(r)]) {
      for (int64_t j = s.offset; j < s.offset + s.length; ++j) {
        id[r][j] = index;
        begin[r][j] = s.prefix_offset;
        end[r][j] = s.prefix_offset + s.prefix_length;
        position[r][j] = s.prefix_length + (j - s.offset);
      }
      ++index;
    }
  }
  auto to_device = [&](const torch::Tensor& t) { return t.to(device); };
  torch::Tensor ids = to_device(span_id), first = to_device(prefix_begin).unsqueeze(2),
                last = to_device(prefix_end).unsqueeze(2);
  torch::Tensor key = torch::arange(width, ids.options()).view({1, 1, width});
  torch::Tensor same = (ids.unsqueeze(2) == ids.unsqueeze(1)) & CausalMask(width, 0, window, ids.options());
  torch::Tensor prefix = (key >= first) & (key < last);
  if (window > 0) {
    // Prefix key j stands at position j - first of the query's sequence.
    torch::Tensor query_position = to_device(sequence_position).unsqueeze(2);
    prefix = prefix & (query_position - (key - first) < window);
  }
  return (same | prefix).unsqueeze(1);
}

class DecoderLayer : public torch::nn::Module {
 public:
  DecoderLayer(const ModelConfig& c, const torch::TensorOptions& o) : c_(c) {
    const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
    auto attn = register_module("self_attn", std::make_shared<torch::nn::Module>());
    q_proj = attn->register_module("q_proj", std::make_shared<Linear>(h, q, c.qkv_bias, o));
    k_proj = attn->register_module("k_proj", std::make_shared<Linear>(h, kv, c.qkv_bias, o));
    v_proj = attn->register_module("v_proj", std::make_shared<Linear>(h, kv, c.qkv_bias, o));
    o_proj = attn->register_module("o_proj", std::make_shared<Linear>(q, h, c.o_bias, o));
    if (c.qk_norm) {
      q_norm = attn->register_module("q_norm", std::make_shared<RMSNorm>(c.head_dim, c.rms_norm_eps, o));
      k_norm = attn->register_module("k_norm", std::make_shared<RMSNorm>(c.head_dim, c.rms_norm_eps, o));
    }
    auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
    const int64_t i = c.intermediate_size;
    gate_proj = mlp->register_module("gate_proj", std::make_shared<Linear>(h, i, c.mlp_bias, o));
    up_proj = mlp->register_module("up_proj", std::make_shared<Linear>(h, i, c.mlp_bias, o));
    down_proj = mlp->register_module("down_proj", std::make_shared<Linear>(i, h, c.mlp_bias, o));
    input_layernorm = register_module("input_layernorm", std::make_shared<RMSNorm>(h, c.rms_norm_eps, o));
    post_attention_layernorm =
        register_module("post_attention_layernorm", std::make_shared<RMSNorm>(h, c.rms_norm_eps, o));
  }

  // x [B, T, H]; cos/sin [B, 1, T, head_dim] in x's dtype; `layout`: how tokens attend.
  torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const AttentionLayout& layout) const {
    const int64_t b = x.size(0), t = x.size(1), d = c_.head_dim;
    torch::Tensor h = (*input_layernorm)(x);
    // q, k and v have biases together or not at all (qkv_bias), so they fuse.
    torch::Tensor q = (*q_proj)(h).view({b, t, c_.num_attention_heads, d});
    torch::Tensor k = (*k_proj)(h).view({b, t, c_.num_key_value_heads, d});
    torch::Tensor v = (*v_proj)(h).view({b, t, c_.num_key_value_heads, d}).transpose(1, 2);
    if (c_.qk_norm) {
      q = (*q_norm)(q);
      k = (*k_norm)(k);
    }
    q = q.transpose(1, 2);
    k = k.transpose(1, 2);
    q = q * cos + RotateHalf(q) * sin;
    k = k * cos + RotateHalf(k) * sin;
    torch::Tensor a = Attention(q, k, v, layout);
    a = a.transpose(1, 2).reshape({b, t, c_.num_attention_heads * d});
    torch::Tensor r = x + (*o_proj)(a);
    h = (*post_attention_layernorm)(r);
    return r + (*down_proj)(torch::silu((*gate_proj)(h)) * (*up_proj)(h));
  }

  // q [B, heads, T, d], k/v [B, kv_heads, T, d] -> [B, heads, T, d].
  torch::Tensor Attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                          const AttentionLayout& layout) const {
    const bool gqa = c_.num_key_value_heads != c_.num_attention_heads;
    auto sdpa = [gqa](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                      const std::optional<torch::Tensor>& mask) {
      return at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0,
                                              /*is_causal=*/!mask.has_value(),
                                              /*scale=*/std::nullopt, /*enable_gqa=*/gqa);
    };
    if (layout.mask.defined()) {
      // CUDA's flash kernel takes no mask and its memory-efficient kernel no GQA: without the
      // expansion a masked GQA call falls back to the math kernel, which holds [B, heads, T, T].
      const int64_t groups = c_.num_attention_heads / c_.num_key_value_heads;
      if (!gqa) return sdpa(q, k, v, layout.mask);
      return at::scaled_dot_product_attention(q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1),
                                              layout.mask,
                                              /*dropout_p=*/0.0, /*is_causal=*/false);
    }
    if (layout.rows.empty()) return sdpa(q, k, v, std::nullopt);
    // One attention per span: sum of L^2 work instead of rows x T^2.
    std::vector<torch::Tensor> rows;
    for (const auto& row : layout.rows) {
      std::vector<torch::Tensor> parts;
      for (const AttentionSpan& s : row) {
        auto piece = [&](const torch::Tensor& t, int64_t offset, int64_t length) {
          return t.narrow(0, s.row, 1).narrow(2, offset, length);
        };
        torch::Tensor query = piece(q, s.offset, s.length);
        const int64_t p = s.prefix_length, window = layout.window;
        const bool window_cuts = window > 0 && p + s.length > window;
        if (p == 0 && !window_cuts) {
          parts.push_back(sdpa(query, piece(k, s.offset, s.length), piece(v, s.offset, s.length), std::nullopt));
          continue;
        }
        // Keys are the prefix, then the span: key j stands at position j of the sequence.
        auto keys = [&](const torch::Tensor& t) {
          if (p == 0) return piece(t, s.offset, s.length);
          return torch::cat({piece(t, s.prefix_offset, p), piece(t, s.offset, s.length)}, 2);
        };
        torch::Tensor mask = CausalMask(s.length, p, window, q.options());
        parts.push_back(sdpa(query, keys(k), keys(v), mask));
      }
      rows.push_back(torch::cat(parts, 2));
    }
    return torch::cat(rows, 0);
  }

  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
  std::shared_ptr<RMSNorm> q_norm, k_norm, input_layernorm, post_attention_layernorm;

 private:
  ModelConfig c_;
};

CausalLM::CausalLM(const ModelConfig& config, const torch::TensorOptions& options) : config_(config) {
  config_.Validate("CausalLM config");
  const int64_t v = config_.vocab_size, h = config_.hidden_size;
  auto model = register_module("model", std::make_shared<torch::nn::Module>());
  auto embed = model->register_module("embed_tokens", std::make_shared<torch::nn::Module>());
  embed_ = embed->register_parameter("weight", torch::empty({v, h}, options));
  auto layers = model->register_module("layers", std::make_shared<torch::nn::Module>());
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    layers_.push_back(layers->register_module(std::to_string(i), std::make_shared<DecoderLayer>(config_, options)));
  }
  auto norm = model->register_module("norm", std::make_shared<torch::nn::Module>());
  norm_ = norm->register_parameter("weight", torch::empty({h}, options));
  if (!config_.tie_word_embeddings) {
    auto head = register_module("lm_head", std::make_shared<torch::nn::Module>());
    lm_head_ = head->register_parameter("weight", torch::empty({v, h}, options));
  }
  inv_freq_ = InverseFrequencies(config_);
}

torch::Tensor CausalLM::lm_head_weight() const { return config_.tie_word_embeddings ? embed_ : lm_head_; }

torch::Tensor CausalLM::Hidden(const torch::Tensor& input_ids, const torch::Tensor& position_ids,
                               const std::vector<AttentionSpan>& spans) {
  if (input_ids.dim() != 2 || input_ids.scalar_type() != torch::kInt64) {
    Fail("CausalLM::Hidden", "input_ids must be a [B, T] int64 tensor");
  }
  const int64_t b = input_ids.size(0), t = input_ids.size(1);
  torch::Tensor pos = position_ids.defined() ? position_ids : torch::arange(t, input_ids.options()).unsqueeze(0);
  if (pos.dim() != 2 || pos.size(1) != t || (pos.size(0) != b && pos.size(0) != 1)) {
    Fail("CausalLM::Hidden", "position_ids must be [B, T] or [1, T]");
  }
  const std::vector<std::vector<AttentionSpan>> rows =
      spans.empty() ? std::vector<std::vector<AttentionSpan>>{} : SpansByRow(spans, b, t);
  const bool span_mask =
      span_attention_ == SpanAttention::kMask || (span_attention_ == SpanAttention::kAuto && input_ids.is_cuda());
  // One layout per window the layers use (full attention, the sliding window), built on first use.
  auto make_layout = [&](int64_t window) {
    auto layout = std::make_shared<AttentionLayout>();
    layout->rows = rows;
    layout->window = window;
    if (!rows.empty() && span_mask) {
      layout->mask = SpanMask(rows, t, window, input_ids.device());
    } else if (rows.empty() && window > 0 && t > window) {
      layout->mask = CausalMask(t, 0, window, input_ids.options()).view({1, 1, t, t});
    }
    return std::shared_ptr<const AttentionLayout>(std::move(layout));
  };
  std::shared_ptr<const AttentionLayout> full_layout, window_layout;
  if (runner_) runner_->BeginForward();
  torch::Tensor x = torch::embedding(embed_, input_ids);
  // cos/sin as transformers: fp32 outer product, then cast to the activation dtype.
  torch::Tensor freqs = pos.to(x.device(), torch::kFloat32).unsqueeze(-1) * inv_freq_.to(x.device()).view({1, 1, -1});
  torch::Tensor emb = torch::cat({freqs, freqs}, -1).unsqueeze(1);  // [B|1, 1, T, head_dim]
  torch::Tensor cos = emb.cos().to(x.scalar_type()), sin = emb.sin().to(x.scalar_type());
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& layer = layers_[i];
    const int64_t window = config_.WindowOf(static_cast<int64_t>(i));
    auto& layout = window > 0 ? window_layout : full_layout;
    if (!layout) layout = make_layout(window);
    // Captured by value: a checkpointed backward re-runs this after Hidden has returned.
    LayerRunner::Block block = [layer, cos, sin, layout](const torch::Tensor& in) {
      return layer->Forward(in, cos, sin, *layout);
    };
    if (runner_) {
      x = runner_->Run(static_cast<int64_t>(i), block, x, checkpointing_);
    } else if (checkpointing_) {
      x = CheckpointedCall(block, x, layer->parameters());
    } else {
      x = layer->Forward(x, cos, sin, *layout);
    }
  }
  return RMSNorm::Apply(x, norm_, config_.rms_norm_eps);
}

torch::Tensor CausalLM::Logits(const torch::Tensor& input_ids, const torch::Tensor& position_ids) {
  return torch::linear(Hidden(input_ids, position_ids), lm_head_weight());
}

void CausalLM::InitWeights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    torch::Tensor init = torch::empty(p.sizes(), torch::kFloat32);
    auto ends_with = [&](std::string_view s) {
      return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    if (ends_with("norm.weight")) {
      init.fill_(1.0);
    } else if (ends_with(".bias")) {
      init.zero_();
    } else {
      init.normal_(0.0, config_.initializer_range, gen);
    }
    p.copy_(init);
  }
}

}  // namespace dpo
