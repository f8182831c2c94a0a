// Memory planning before launch: the bytes one rank needs to train a job, per train.sharding
// mode, computed from the model's config.json and the spec alone (no torch, no weights), so
// `dpo-worker --plan` and the coordinator's SubmitJob can refuse a job that cannot fit before
// any rank starts. Torch-free (dpo_core).
//
// The figures follow what the code allocates (worker/shard/sharded_model.cc,
// worker/optim/adamw.cc, worker/train/trainer.cc); docs/memory_plan.md gives the formulas.
// Model state (parameters, gradients, optimizer state, reference) is exact up to allocator
// rounding; activations are an estimate, an upper bound for padded batches of max_length.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "common/config/job_spec.h"
#include "common/config/model_config.h"

namespace dpo {

struct MemoryPlanOptions {
  // Data-parallel ranks (W): the shard of a unit of n parameters is ceil(n / W).
  // Default: 1.
  int64_t ranks = 1;
  // The ranks are GPUs: train.bf16 null then resolves to true, as the worker resolves it on
  // CUDA. Default: false (CPU).
  bool gpu = false;
  // Memory of one device in GiB (2^30 bytes), which `fits` compares each mode's total with.
  // Default: 80 (an A100/H100 80 GB).
  double device_gib = 80;
  // Architecture of reference.path when the reference is a different model.
  // Default: null = the policy's (a frozen copy of the initial policy).
  std::optional<ModelConfig> reference_config;
};

// Bytes one rank holds in one sharding mode. Doubles: an absurd spec gives a huge figure, not
// an overflow; figures are exact integers below 2^53 bytes.
struct ModeMemory {
  double parameters = 0;   // masters plus the compute copy or gathered units
  double gradients = 0;    // master gradients plus reduce-scatter buffers in flight
  double optimizer = 0;    // AdamW's two moments
  double reference = 0;    // the frozen reference model (0 with reference.mode none)
  double activations = 0;  // estimate: decoder activations kept for backward + log-prob head
  // Training peak: the sum of the above, less the reference when it exists only while
  // precomputing (MemoryPlan::reference_precompute_only).
  double total = 0;
  bool fits = false;  // total <= MemoryPlanOptions::device_gib
};

struct MemoryPlan {
  // Parameter counts (elements) of the policy: all of them (P), the largest decoder layer, the
  // root unit (embedding, final norm, lm_head), and one rank's shards summed over units.
  int64_t parameters = 0;
  int64_t largest_layer_parameters = 0;
  int64_t root_parameters = 0;
  int64_t shard_parameters = 0;
  int64_t ranks = 1;
  bool gpu = false;   // as MemoryPlanOptions::gpu
  bool bf16 = false;  // train.bf16 as resolved
  // reference.mode precomputed: the reference is resident only while its log-probs are
  // precomputed, before training, so it is reported but not part of `total`.
  bool reference_precompute_only = false;
  double device_gib = 0;
  // Indexed by TrainSection::Sharding (none, optimizer, full).
  std::array<ModeMemory, 3> modes;

  const ModeMemory& mode(TrainSection::Sharding sharding) const { return modes[static_cast<size_t>(sharding)]; }
};

// The plan for training `policy` as `spec` says on options.ranks ranks. Throws dpo::Error when
// options.ranks < 1 or options.device_gib <= 0.
MemoryPlan PlanMemory(const ModelConfig& policy, const JobSpec& spec, const MemoryPlanOptions& options);

// PlanMemory with the architectures read from the spec's files: model.path/config.json or
// model.random.config, and reference.path/config.json when set. Throws dpo::Error when one
// cannot be read or parsed.
MemoryPlan PlanMemoryForSpec(const JobSpec& spec, MemoryPlanOptions options);

// The plan as a table: rows parameters, gradients, optimizer, reference, activations, total;
// columns none / optimizer / full; GiB with 2 decimals; then fits / does not fit per mode.
std::string FormatMemoryPlan(const MemoryPlan& plan);

// The plan as JSON, in bytes: {"ranks", "gpu", "bf16", "parameters", ..., "modes": {"none":
// {"parameters", "gradients", "optimizer", "reference", "activations", "total", "fits"}, ...}}.
std::string MemoryPlanJson(const MemoryPlan& plan);

// One mode in one line, for a refusal: "train.sharding: none needs 93.54 GiB per rank on 8
// rank(s) (in GiB: parameters 29.92, ...) but a device has 80 GiB; modes that fit: optimizer, full".
std::string DescribeMisfit(const MemoryPlan& plan, TrainSection::Sharding sharding);

}  // namespace dpo
