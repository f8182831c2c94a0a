// Checkpoints of sharded training, and optimizer state that moves between world sizes and
// sharding modes (elastic resume).
//
// A sharded run's checkpoint-<step>/ holds, beside trainer_state.json:
//   model/                         a complete HF directory, one safetensors file per unit
//                                  (model-0000i-of-0000n.safetensors + index), written by rank 0
//                                  one gathered unit at a time: no rank holds the whole model.
//                                  Stored in the master dtype, so it is the master weights.
//   optimizer-manifest.json        {"world_size", "sharding", "units": [{"name", "numel",
//                                  "shard_numel", "params": [{"name", "shape", "offset"}]}]}
//   optimizer-rank-R-of-W.safetensors   rank R's AdamW moments, exp_avg.<unit> and
//                                  exp_avg_sq.<unit> ([shard_numel] each), and step.<unit>
// A replicated run's checkpoint has optimizer.safetensors instead, keyed by parameter name.
// OptimizerStateReader reads either, by parameter and element range, so a checkpoint written
// with W ranks in any mode resumes on any number of ranks in any mode.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "worker/shard/sharded_model.h"

namespace dpo {

class ProcessGroup;
struct TrainerState;

// Writes checkpoint-<state.global_step> of a sharded run under output_dir atomically (built in
// a temp directory, renamed when every rank's files are complete) and returns its path.
// `optimizer_state` is this rank's AdamW StateDict over the units. Collective. Throws
// dpo::Error (on every rank) when a master weight is not finite.
std::string SaveShardedCheckpoint(const std::string& output_dir, ShardedModel& sharded,
                                  const std::map<std::string, at::Tensor>& optimizer_state, const TrainerState& state,
                                  const std::string& tokenizer_dir, const std::string& sharding_name,
                                  ProcessGroup& group);

class OptimizerStateReader {
 public:
  // Reads checkpoint_dir's optimizer.safetensors, or its manifest and per-rank files. Throws
  // dpo::Error naming the file when neither is there or one is malformed.
  explicit OptimizerStateReader(const std::string& checkpoint_dir);
  ~OptimizerStateReader();

  // StateDict for AdamW over whole parameters (train.sharding none): exp_avg.<name>,
  // exp_avg_sq.<name>, step.<name>, on `device`.
  std::map<std::string, at::Tensor> ForParameters(const std::vector<std::string>& names,
                                                  const std::vector<std::vector<int64_t>>& shapes,
                                                  c10::Device device) const;
  // StateDict for AdamW over this rank's unit shards (sharded modes), on `device`.
  std::map<std::string, at::Tensor> ForShards(const std::vector<UnitLayout>& layouts, int64_t rank,
                                              c10::Device device) const;

  class Source;

 private:
  std::unique_ptr<Source> source_;
};

}  // namespace dpo
