#include "worker/shard/shard_checkpoint.h"

#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include "common/model/causal_lm.h"
#include "common/model/checkpoint_io.h"
#include "common/model/pretrained.h"
#include "common/model/safetensors.h"
#include "common/util/atomic_file.h"
#include "common/util/error.h"
#include "common/util/path_util.h"
#include "worker/comm/process_group.h"
#include "worker/train/checkpoint.h"

namespace dpo {
namespace {

constexpr const char* kManifest = "optimizer-manifest.json";
constexpr const char* kReplicatedOptimizer = "optimizer.safetensors";
constexpr const char* kKinds[] = {"exp_avg", "exp_avg_sq"};

std::string RankFile(int64_t rank, int64_t world) {
  char name[96];
  std::snprintf(name, sizeof(name), "optimizer-rank-%05lld-of-%05lld.safetensors", static_cast<long long>(rank),
                static_cast<long long>(world));
  return name;
}

std::string ModelFile(size_t index, size_t count) {
  char name[64];
  std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return name;
}

nlohmann::json ManifestJson(const std::vector<UnitLayout>& layouts, int64_t world, const std::string& sharding) {
  nlohmann::json units = nlohmann::json::array();
  for (const UnitLayout& unit : layouts) {
    nlohmann::json params = nlohmann::json::array();
    for (const FlatParam& p : unit.params) {
      params.push_back({{"name", p.name}, {"shape", p.shape}, {"offset", p.offset}});
    }
    units.push_back(
        {{"name", unit.name}, {"numel", unit.numel}, {"shard_numel", unit.shard_numel}, {"params", params}});
  }
  return {{"world_size", world}, {"sharding", sharding}, {"units", units}};
}

// model/ of a sharded run: one file per unit, gathered and written one unit at a time.
void WriteShardedModel(ShardedModel& sharded, const std::string& dir, const std::string& tokenizer_dir, bool writer) {
  const std::vector<UnitLayout> layouts = sharded.layouts();
  std::map<std::string, std::string> weight_map;
  uint64_t total_bytes = 0;
  torch::ScalarType dtype = torch::kFloat;
  if (writer) MakeDirectories(dir);
  for (size_t i = 0; i < layouts.size(); ++i) {
    NamedTensors tensors = sharded.GatherUnitForSave(i);
    if (!writer) continue;
    const std::string file = ModelFile(i, layouts.size());
    for (const auto& [name, tensor] : tensors) {
      weight_map[name] = file;
      total_bytes += tensor.nbytes();
      dtype = tensor.scalar_type();
    }
    WriteTensors(JoinPath(dir, file), tensors);
  }
  if (!writer) return;
  WriteFileAtomically(JoinPath(dir, "model.safetensors.index.json"), SafetensorsIndexJson(weight_map, total_bytes));
  WritePretrainedMetadata(sharded.model().config(), dtype, dir, tokenizer_dir);
}

}  // namespace

std::string SaveShardedCheckpoint(const std::string& output_dir, ShardedModel& sharded,
                                  const std::map<std::string, at::Tensor>& optimizer_state, const TrainerState& state,
                                  const std::string& tokenizer_dir, const std::string& sharding_name,
                                  ProcessGroup& group) {
  const int64_t rank = group.rank(), world = group.world_size();
  // Every rank refuses together: a checkpoint is never written from NaN/Inf weights.
  double non_finite = 0;
  {
    torch::NoGradGuard no_grad;
    for (const at::Tensor& master : sharded.master_shards()) {
      non_finite += static_cast<double>((~torch::isfinite(master)).sum().item<int64_t>());
    }
  }
  if (group.AllReduceScalar(non_finite) > 0) {
    Fail("checkpoint", "a master weight is not finite; refusing to save");
  }
  // All ranks build in rank 0's temp directory.
  const auto writer_id = static_cast<int64_t>(group.AllReduceScalar(rank == 0 ? ::getpid() : 0));
  std::string temp_dir;
  if (rank == 0) temp_dir = CheckpointTempDir(output_dir, state.global_step, writer_id);
  group.Barrier();
  if (rank != 0) {
    temp_dir =
        JoinPath(output_dir, ".tmp-checkpoint-" + std::to_string(state.global_step) + "-" + std::to_string(writer_id));
  }
  const CheckpointPaths paths(temp_dir);
  WriteShardedModel(sharded, paths.model_dir, tokenizer_dir, rank == 0);
  WriteTensors(JoinPath(temp_dir, RankFile(rank, world)), NamedTensors(optimizer_state.begin(), optimizer_state.end()));
  if (rank == 0) {
    WriteFileAtomically(JoinPath(temp_dir, kManifest), ManifestJson(sharded.layouts(), world, sharding_name).dump(1));
    WriteFileAtomically(paths.state_file, state.ToJson());
  }
  group.Barrier();  // every rank's files are complete
  std::string final_dir;
  if (rank == 0) final_dir = CommitCheckpoint(temp_dir, output_dir, state.global_step);
  group.Barrier();
  return final_dir;
}

// ---- Reading ---------------------------------------------------------------------------------

// Where a checkpoint's optimizer state comes from: flattened element ranges of a parameter.
class OptimizerStateReader::Source {
 public:
  virtual ~Source() = default;
  // Elements [begin, end) of `kind` of parameter `name`, flattened, fp32 on the CPU. `numel` is
  // the parameter's element count in the model being resumed: a checkpoint that holds another
  // count for it is refused (dpo::Error naming the file and tensor), never cut or padded to fit.
  virtual at::Tensor Read(const std::string& kind, const std::string& name, int64_t numel, int64_t begin,
                          int64_t end) const = 0;
  // AdamW's step count of parameter `name`, a 0-dim fp32 tensor.
  virtual at::Tensor Step(const std::string& name) const = 0;
};

namespace {

void CheckNumel(const std::string& file, const std::string& tensor, int64_t stored, int64_t expected,
                const std::string& expected_by) {
  if (stored == expected) return;
  Fail(file,
       "tensor '" + tensor + "' holds " + std::to_string(stored) + " elements, but " + expected_by + " has " +
           std::to_string(expected) + "; refusing to resume from it",
       ErrorCode::kBadModel);
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// optimizer.safetensors of a replicated run: whole tensors keyed by parameter name.
class ReplicatedSource final : public OptimizerStateReader::Source {
 public:
  explicit ReplicatedSource(const std::string& path) : reader_(path) {}
  at::Tensor Read(const std::string& kind, const std::string& name, int64_t numel, int64_t begin,
                  int64_t end) const override {
    const std::string key = kind + "." + name;
    CheckNumel(reader_.FileOf(key), key, Numel(reader_.Shape(key)), numel, "the parameter");
    return reader_.Read(key, torch::kFloat).reshape(-1).narrow(0, begin, end - begin);
  }
  at::Tensor Step(const std::string& name) const override { return reader_.Read("step." + name, torch::kFloat); }

 private:
  CheckpointReader reader_;
};

// A sharded run's manifest and per-rank files, of any world size.
class ShardedSource final : public OptimizerStateReader::Source {
 public:
  explicit ShardedSource(const std::string& dir) {
    manifest_ = JoinPath(dir, kManifest);
    const std::string& path = manifest_;
    try {
      const nlohmann::json manifest = nlohmann::json::parse(ReadWholeFile(path));
      world_ = manifest.at("world_size").get<int64_t>();
      for (const auto& unit : manifest.at("units")) {
        units_.push_back({unit.at("name").get<std::string>(), unit.at("shard_numel").get<int64_t>()});
        for (const auto& p : unit.at("params")) {
          params_[p.at("name").get<std::string>()] = {units_.size() - 1, p.at("offset").get<int64_t>(),
                                                      Numel(p.at("shape").get<std::vector<int64_t>>())};
        }
      }
    } catch (const nlohmann::json::exception& e) {
      Fail(path, std::string("malformed optimizer manifest: ") + e.what());
    }
    if (world_ < 1) Fail(path, "world_size must be >= 1");
    for (int64_t r = 0; r < world_; ++r) {
      ranks_.push_back(std::make_unique<CheckpointReader>(JoinPath(dir, RankFile(r, world_))));
      // Every shard as long as the manifest says, or the flat positions below would be wrong.
      for (const UnitInfo& unit : units_) {
        for (const char* kind : kKinds) {
          const std::string key = std::string(kind) + "." + unit.name;
          CheckNumel(ranks_.back()->FileOf(key), key, Numel(ranks_.back()->Shape(key)), unit.shard_numel,
                     path + " (shard_numel)");
        }
      }
    }
  }

  at::Tensor Read(const std::string& kind, const std::string& name, int64_t numel, int64_t begin,
                  int64_t end) const override {
    const auto& [unit_index, offset, stored_numel] = Find(name);
    CheckNumel(manifest_, name, stored_numel, numel, "the parameter");
    const UnitInfo& unit = units_[unit_index];
    at::Tensor out = torch::empty({end - begin}, torch::kFloat);
    // Flat positions [offset + begin, offset + end) of the unit, spread over the ranks' shards.
    for (int64_t pos = offset + begin; pos < offset + end;) {
      const int64_t rank = pos / unit.shard_numel, local = pos % unit.shard_numel;
      const int64_t count = std::min(unit.shard_numel - local, offset + end - pos);
      at::Tensor shard = ranks_.at(static_cast<size_t>(rank))->Read(kind + "." + unit.name, torch::kFloat);
      out.narrow(0, pos - offset - begin, count).copy_(shard.narrow(0, local, count));
      pos += count;
    }
    return out;
  }

  at::Tensor Step(const std::string& name) const override {
    return ranks_.front()->Read("step." + units_[Find(name).unit].name, torch::kFloat);
  }

 private:
  struct UnitInfo {
    std::string name;
    int64_t shard_numel;
  };
  struct ParamInfo {
    size_t unit;
    int64_t offset, numel;
  };
  const ParamInfo& Find(const std::string& name) const {
    auto it = params_.find(name);
    if (it == params_.end()) Fail("optimizer manifest", "no parameter \"" + name + "\"");
    return it->second;
  }
  int64_t world_ = 0;
  std::vector<UnitInfo> units_;
  std::string manifest_;
  std::map<std::string, ParamInfo> params_;
  std::vector<std::unique_ptr<CheckpointReader>> ranks_;
};

}  // namespace

OptimizerStateReader::OptimizerStateReader(const std::string& checkpoint_dir) {
  if (PathExists(JoinPath(checkpoint_dir, kReplicatedOptimizer))) {
    source_ = std::make_unique<ReplicatedSource>(JoinPath(checkpoint_dir, kReplicatedOptimizer));
  } else if (PathExists(JoinPath(checkpoint_dir, kManifest))) {
    source_ = std::make_unique<ShardedSource>(checkpoint_dir);
  } else {
    Fail(checkpoint_dir, std::string("no ") + kReplicatedOptimizer + " or " + kManifest);
  }
}

OptimizerStateReader::~OptimizerStateReader() = default;

std::map<std::string, at::Tensor> OptimizerStateReader::ForParameters(const std::vector<std::string>& names,
                                                                      const std::vector<std::vector<int64_t>>& shapes,
                                                                      c10::Device device) const {
  std::map<std::string, at::Tensor> state;
  for (size_t i = 0; i < names.size(); ++i) {
    int64_t numel = 1;
    for (int64_t d : shapes[i]) numel *= d;
    for (const char* kind : kKinds) {
      state[std::string(kind) + "." + names[i]] =
          source_->Read(kind, names[i], numel, 0, numel).view(shapes[i]).to(device);
    }
    state["step." + names[i]] = source_->Step(names[i]).to(device);
  }
  return state;
}

std::map<std::string, at::Tensor> OptimizerStateReader::ForShards(const std::vector<UnitLayout>& layouts, int64_t rank,
                                                                  c10::Device device) const {
  std::map<std::string, at::Tensor> state;
  for (const UnitLayout& unit : layouts) {
    for (const char* kind : kKinds) {
      at::Tensor shard = torch::zeros({unit.shard_numel}, torch::kFloat);  // padding stays zero
      for (const ShardPiece& piece : ShardPieces(unit, rank)) {
        shard.narrow(0, piece.shard_begin, piece.length)
            .copy_(source_->Read(kind, piece.param->name, piece.param->numel, piece.param_begin,
                                 piece.param_begin + piece.length));
      }
      state[std::string(kind) + "." + unit.name] = shard.to(device);
    }
    state["step." + unit.name] = source_->Step(unit.params.front().name).to(device);
  }
  return state;
}

}  // namespace dpo
