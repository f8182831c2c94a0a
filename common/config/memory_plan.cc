#include "common/config/memory_plan.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string_view>

#include "common/util/error.h"
#include "common/util/path_util.h"

namespace dpo {
namespace {

constexpr double kGiB = 1ULL << 30;
constexpr TrainSection::Sharding kModes[] = {TrainSection::Sharding::kNone, TrainSection::Sharding::kOptimizer,
                                             TrainSection::Sharding::kFull};

// A Linear as common/model/causal_lm.cc builds it: weight [out, in], bias [out] when present.
int64_t LinearParameters(int64_t in, int64_t out, bool bias) { return in * out + (bias ? out : 0); }

// One decoder layer, parameter by parameter as causal_lm.cc registers them.
int64_t LayerParameters(const ModelConfig& c) {
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  int64_t n =
      LinearParameters(h, q, c.qkv_bias) + 2 * LinearParameters(h, kv, c.qkv_bias) + LinearParameters(q, h, c.o_bias);
  if (c.qk_norm) n += 2 * c.head_dim;  // q_norm, k_norm
  n += 2 * LinearParameters(h, i, c.mlp_bias) + LinearParameters(i, h, c.mlp_bias);
  return n + 2 * h;  // input_layernorm, post_attention_layernorm
}

// The root unit: embed_tokens, the final norm, and lm_head unless tied to the embedding.
int64_t RootParameters(const ModelConfig& c) {
  const int64_t embed = c.vocab_size * c.hidden_size;
  return embed + c.hidden_size + (c.tie_word_embeddings ? 0 : embed);
}

// Parameter tensors of the policy, as causal_lm.cc registers them: AdamW keeps one fp32 step
// counter per tensor it steps (whole parameters; one per unit when sharded).
int64_t ParameterTensors(const ModelConfig& c) {
  const int64_t per_layer =
      4 + (c.qkv_bias ? 3 : 0) + (c.o_bias ? 1 : 0) + (c.qk_norm ? 2 : 0) + 3 + (c.mlp_bias ? 3 : 0) + 2;
  return c.num_hidden_layers * per_layer + 2 + (c.tie_word_embeddings ? 0 : 1);
}

// The unit structure ShardedModel builds over W ranks (all layers have one shape).
struct Units {
  int64_t total = 0, layer = 0, root = 0;
  int64_t shards = 0;  // sum over units of ceil(numel / W)
};

Units UnitsOf(const ModelConfig& c, int64_t ranks) {
  Units u;
  u.layer = LayerParameters(c);
  u.root = RootParameters(c);
  u.total = c.num_hidden_layers * u.layer + u.root;
  auto shard = [ranks](int64_t n) { return (n + ranks - 1) / ranks; };
  u.shards = c.num_hidden_layers * shard(u.layer) + shard(u.root);
  return u;
}

// Bytes of the activations one micro-batch keeps for backward, and of the log-prob head's fp32
// logits and their gradient. Counted for padded rows of max_length tokens (padding-free rows
// hold fewer), so it errs high.
double ActivationBytes(const ModelConfig& c, const JobSpec& spec, bool bf16) {
  const int64_t max_length = spec.data.max_length.value_or(c.max_position_embeddings);
  const double tokens =
      2.0 * static_cast<double>(spec.train.per_device_train_batch_size) * static_cast<double>(max_length);
  const double a = bf16 ? 2 : 4;
  const double h = static_cast<double>(c.hidden_size);
  const double q = static_cast<double>(c.num_attention_heads * c.head_dim);
  const double kv = static_cast<double>(c.num_key_value_heads * c.head_dim);
  const double layers = static_cast<double>(c.num_hidden_layers);
  // Per token inside one layer's backward: the norms' inputs and outputs and the residual
  // stream (6H), q/k/v and the attention output (2·(q + kv)), the MLP's gate, up, their product
  // and the activation (4I).
  const double inside_layer = 6 * h + 2 * (q + kv) + 4 * static_cast<double>(c.intermediate_size);
  // Checkpointing keeps only each layer's input and recomputes one layer at a time.
  const double decoder =
      spec.train.gradient_checkpointing ? tokens * a * (layers * h + inside_layer) : tokens * layers * a * inside_layer;
  const double head = 2.0 * static_cast<double>(spec.train.logprob_chunk_size) * static_cast<double>(c.vocab_size) * 4;
  return decoder + head;
}

std::string Gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", bytes / kGiB);
  return text;
}

// Device memory as given (0.001 GiB must not print as 0.00).
std::string DeviceGib(double gib) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", gib);
  return text;
}

}  // namespace

MemoryPlan PlanMemory(const ModelConfig& policy, const JobSpec& spec, const MemoryPlanOptions& options) {
  if (options.ranks < 1) Fail("memory plan", "ranks must be >= 1");
  if (!(options.device_gib > 0)) Fail("memory plan", "device memory must be > 0");
  const int64_t w = options.ranks;
  const Units u = UnitsOf(policy, w);
  const Units ref = UnitsOf(options.reference_config.value_or(policy), w);

  MemoryPlan plan;
  plan.parameters = u.total;
  plan.largest_layer_parameters = u.layer;
  plan.root_parameters = u.root;
  plan.shard_parameters = u.shards;
  plan.ranks = w;
  plan.gpu = options.gpu;
  plan.bf16 = spec.train.bf16.value_or(options.gpu);
  plan.reference_precompute_only = spec.reference.mode == ReferenceSection::Mode::kPrecomputed;
  plan.device_gib = options.device_gib;

  // m: masters and AdamW moments (model.dtype). c: gathered weights in the sharded modes (bf16
  // under autocast, FSDP2's param_dtype). r: the reduce-scatter buffers (train.reduce_dtype).
  const double m = spec.model.dtype == ModelSection::Dtype::kBFloat16 ? 2 : 4;
  const double c = plan.bf16 ? 2 : m;
  const double r = spec.train.reduce_dtype == TrainSection::ReduceDtype::kBFloat16 ? 2 : 4;
  const auto d = [](int64_t n) { return static_cast<double>(n); };
  const double activations = ActivationBytes(policy, spec, plan.bf16);
  // Backward holds up to three layers' full gradients (autograd's output and the two
  // reduce-scatters in flight) plus the root's, each in the compute dtype and again flattened in
  // the reduce dtype.
  const double scatter_buffers = (c + r) * (3 * d(u.layer) + d(u.root));

  for (const TrainSection::Sharding sharding : kModes) {
    ModeMemory& mode = plan.modes[static_cast<size_t>(sharding)];
    switch (sharding) {
      case TrainSection::Sharding::kNone:
        mode.parameters = m * d(u.total);
        mode.gradients = m * d(u.total);
        mode.optimizer = 2 * m * d(u.total) + 4 * d(ParameterTensors(policy));
        break;
      case TrainSection::Sharding::kOptimizer:  // ZeRO-2: the compute copy stays whole
        mode.parameters = m * d(u.shards) + c * d(u.total);
        mode.gradients = m * d(u.shards) + scatter_buffers;
        mode.optimizer = 2 * m * d(u.shards) + 4 * d(policy.num_hidden_layers + 1);
        break;
      case TrainSection::Sharding::kFull:  // ZeRO-3: the root and two layers gathered at once
        mode.parameters = m * d(u.shards) + c * d(u.root + 2 * u.layer);
        mode.gradients = m * d(u.shards) + scatter_buffers;
        mode.optimizer = 2 * m * d(u.shards) + 4 * d(policy.num_hidden_layers + 1);
        break;
    }
    if (spec.reference.mode != ReferenceSection::Mode::kNone) {
      // Only full shards the reference (its shards kept in the compute dtype); otherwise it is
      // a whole frozen model in model.dtype on every rank.
      mode.reference = sharding == TrainSection::Sharding::kFull ? c * d(ref.shards) + c * d(ref.root + 2 * ref.layer)
                                                                 : m * d(ref.total);
    }
    mode.activations = activations;
    mode.total = mode.parameters + mode.gradients + mode.optimizer + mode.activations +
                 (plan.reference_precompute_only ? 0 : mode.reference);
    mode.fits = mode.total <= options.device_gib * kGiB;
  }
  return plan;
}

MemoryPlan PlanMemoryForSpec(const JobSpec& spec, MemoryPlanOptions options) {
  const ModelConfig policy = ModelConfig::FromJsonFile(spec.model.path ? JoinPath(*spec.model.path, "config.json")
                                                                       : spec.model.random->config);
  if (spec.reference.path && spec.reference.mode != ReferenceSection::Mode::kNone) {
    options.reference_config = ModelConfig::FromJsonFile(JoinPath(*spec.reference.path, "config.json"));
  }
  return PlanMemory(policy, spec, options);
}

std::string FormatMemoryPlan(const MemoryPlan& plan) {
  std::string out = "memory per rank on " + std::to_string(plan.ranks) + (plan.gpu ? " GPU" : " CPU") +
                    " rank(s), bf16 " + (plan.bf16 ? "on" : "off") + ", " + std::to_string(plan.parameters) +
                    " parameters (largest layer " + std::to_string(plan.largest_layer_parameters) + ", root " +
                    std::to_string(plan.root_parameters) + ")\n";
  char line[160];
  auto row = [&](std::string_view label, double ModeMemory::*field) {
    std::snprintf(line, sizeof line, "%-30.*s", static_cast<int>(label.size()), label.data());
    out += line;
    for (const ModeMemory& mode : plan.modes) {
      std::snprintf(line, sizeof line, "%12s", Gib(mode.*field).c_str());
      out += line;
    }
    out += "\n";
  };
  std::snprintf(line, sizeof line, "%-30s%12s%12s%12s\n", "GiB", "none", "optimizer", "full");
  out += line;
  row("parameters", &ModeMemory::parameters);
  row("gradients", &ModeMemory::gradients);
  row("optimizer", &ModeMemory::optimizer);
  row(plan.reference_precompute_only ? "reference (precompute phase)" : "reference", &ModeMemory::reference);
  row("activations (estimate)", &ModeMemory::activations);
  row("total", &ModeMemory::total);
  const std::string device = DeviceGib(plan.device_gib) + " GiB per device";
  for (const TrainSection::Sharding sharding : kModes) {
    out += std::string(ToString(sharding)) + ": " + (plan.mode(sharding).fits ? "fits" : "does not fit") + " in " +
           device + "\n";
  }
  if (plan.reference_precompute_only) {
    out +=
        "the reference is resident only while its log-probs are precomputed, before "
        "training: it is not in the total\n";
  }
  return out;
}

std::string MemoryPlanJson(const MemoryPlan& plan) {
  nlohmann::json modes;
  for (const TrainSection::Sharding sharding : kModes) {
    const ModeMemory& m = plan.mode(sharding);
    modes[std::string(ToString(sharding))] = {{"parameters", m.parameters},
                                              {"gradients", m.gradients},
                                              {"optimizer", m.optimizer},
                                              {"reference", m.reference},
                                              {"activations", m.activations},
                                              {"total", m.total},
                                              {"fits", m.fits}};
  }
  return nlohmann::json{{"ranks", plan.ranks},
                        {"gpu", plan.gpu},
                        {"bf16", plan.bf16},
                        {"parameters", plan.parameters},
                        {"largest_layer_parameters", plan.largest_layer_parameters},
                        {"root_parameters", plan.root_parameters},
                        {"reference_precompute_only", plan.reference_precompute_only},
                        {"device_gib", plan.device_gib},
                        {"modes", modes}}
             .dump(1) +
         "\n";
}

std::string DescribeMisfit(const MemoryPlan& plan, TrainSection::Sharding sharding) {
  const ModeMemory& mode = plan.mode(sharding);
  std::string fitting;
  for (const TrainSection::Sharding other : kModes) {
    if (plan.mode(other).fits) {
      fitting += (fitting.empty() ? "" : ", ") + std::string(ToString(other));
    }
  }
  return "train.sharding: " + std::string(ToString(sharding)) + " needs " + Gib(mode.total) + " GiB per rank on " +
         std::to_string(plan.ranks) + " rank(s) (in GiB: parameters " + Gib(mode.parameters) + ", gradients " +
         Gib(mode.gradients) + ", optimizer " + Gib(mode.optimizer) + ", reference " + Gib(mode.reference) +
         (plan.reference_precompute_only ? " while precomputing" : "") + ", activations " + Gib(mode.activations) +
         " estimated) but a device has " + DeviceGib(plan.device_gib) + " GiB; " +
         (fitting.empty() ? "no mode fits" : "modes that fit: " + fitting);
}

}  // namespace dpo
