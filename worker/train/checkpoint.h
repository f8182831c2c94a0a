// Training checkpoints: <output.dir>/checkpoint-<step>/ holding
//   model/                  an HF model directory (config.json, model.safetensors, tokenizer files)
//   optimizer.safetensors   AdamW moments and step counts, keyed by parameter name
//   trainer_state.json      step, data position, bad-step counters, RNG state, the job spec
//
// A checkpoint is built in a hidden temp directory, every file fsynced, then renamed into place
// and the parent fsynced: a kill at any moment leaves either no checkpoint-<step> or a complete
// one. Only directories named exactly checkpoint-<digits> count; leftovers are ignored.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace dpo {

class CausalLM;

struct TrainerState {
  int64_t global_step = 0;     // optimizer steps done
  int64_t epoch = 0;           // epoch of the next micro-batch
  int64_t batch_in_epoch = 0;  // micro-batches of that epoch already consumed
  int64_t skipped_steps = 0;   // non-finite steps skipped so far
  int64_t consecutive_bad_steps = 0;
  std::string rng_state_hex;  // torch's CPU generator state
  std::string job_spec_yaml;  // the resolved spec the run started with

  std::string ToJson() const;
  static TrainerState FromJson(const std::string& text, const std::string& source);
};

struct CheckpointPaths {
  std::string dir, model_dir, optimizer_file, state_file;
  explicit CheckpointPaths(const std::string& checkpoint_dir);
};

// Writes checkpoint-<state.global_step> under output_dir atomically and returns its path.
// tokenizer_dir's tokenizer files are copied into model/. Throws dpo::Error if any parameter
// is non-finite (a checkpoint is never written from NaN/Inf weights) or on I/O failure.
std::string SaveCheckpoint(const std::string& output_dir, CausalLM& model,
                           const std::map<std::string, at::Tensor>& optimizer_state, const TrainerState& state,
                           const std::string& tokenizer_dir);

// The atomic protocol every checkpoint writer follows. CheckpointTempDir creates (empty) the
// hidden directory a checkpoint of `step` is built in; `writer_id` (a pid) keeps concurrent
// writers apart. CommitCheckpoint fsyncs it, replaces any checkpoint-<step> with it and fsyncs
// output_dir; it returns the final path.
std::string CheckpointTempDir(const std::string& output_dir, int64_t step, int64_t writer_id);
std::string CommitCheckpoint(const std::string& temp_dir, const std::string& output_dir, int64_t step);

// Removes the temp directories (.tmp-checkpoint-*) that saves killed midway left in output_dir,
// and returns how many. Only for a writer that holds the directory's lock (OutputDirLock), at
// start, before any save of its own.
int RemoveCheckpointTemps(const std::string& output_dir);

struct LoadedCheckpoint {
  TrainerState state;
  // On the model's device; empty for a sharded run's checkpoint (see OptimizerStateReader,
  // worker/shard/shard_checkpoint.h, which reads both kinds).
  std::map<std::string, at::Tensor> optimizer_state;
};

// trainer_state.json of a checkpoint. Throws dpo::Error naming the file when it is malformed.
TrainerState LoadTrainerState(const std::string& checkpoint_dir);

// Restores a checkpoint written by SaveCheckpoint: copies model/ weights into `model` (which
// must have the same architecture) and returns the trainer and optimizer state. Throws
// dpo::Error naming the file and the tensor or field that is missing or malformed, a weight whose
// shape differs from its parameter's or whose dtype is neither the parameter's nor fp32, and a
// non-finite weight.
LoadedCheckpoint LoadCheckpoint(const std::string& checkpoint_dir, CausalLM& model);

// Complete checkpoints under output_dir, oldest (lowest step) first.
std::vector<std::string> ListCheckpoints(const std::string& output_dir);

// Deletes the oldest checkpoints so that at most `keep` remain.
void PruneCheckpoints(const std::string& output_dir, int64_t keep);

// Resolves resume_from_checkpoint: "latest" is the newest complete checkpoint in output_dir
// (nullopt when there is none); anything else is a checkpoint path, which must exist.
std::optional<std::string> ResolveCheckpoint(const std::string& spec_value, const std::string& output_dir);

}  // namespace dpo
