// Hugging Face model directories: config.json + safetensors weights (+ tokenizer files), the
// layout transformers' from_pretrained / save_pretrained use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <torch/types.h>

#include "common/model/causal_lm.h"

namespace dpo {

class CheckpointReader;

// Loads `dir` (config.json and model.safetensors or a sharded index) into a model of `dtype` on
// `device`; stored F32/F16/BF16 weights are converted. Throws dpo::Error naming the file and
// tensor when a tensor is missing, has the wrong shape, or is not part of the architecture.
std::shared_ptr<CausalLM> LoadPretrained(const std::string& dir, torch::ScalarType dtype,
                                         const torch::Device& device = torch::kCPU);

// A model of `dir`'s architecture with its parameters allocated on `device` but not filled, and
// the reader of its weights, checked as LoadPretrained checks them (every parameter present
// with its shape, no tensor the architecture lacks) before anything is read. For callers that
// copy out only parts of each tensor (sharded training): on the CPU, memory never written
// costs no RAM. Throws dpo::Error as LoadPretrained.
struct UnloadedPretrained {
  std::shared_ptr<CausalLM> model;
  std::shared_ptr<CheckpointReader> weights;
};
UnloadedPretrained OpenPretrained(const std::string& dir, torch::ScalarType dtype,
                                  const torch::Device& device = torch::kCPU);

// A model with transformers-like random weights (CausalLM::InitWeights), for tests and demos.
std::shared_ptr<CausalLM> RandomInit(const ModelConfig& config, uint64_t seed,
                                     torch::ScalarType dtype = torch::kFloat32,
                                     const torch::Device& device = torch::kCPU);

struct SaveOptions {
  // Dtype of the stored weights. Default: kUndefined = the model's own dtype.
  torch::ScalarType dtype = torch::ScalarType::Undefined;
  // Directory whose tokenizer.json, tokenizer_config.json and special_tokens_map.json (those
  // present) are copied beside the weights, so the result is a complete HF model directory.
  // Default: empty = none.
  std::string tokenizer_dir;
  // Above this many bytes of weights the checkpoint is sharded with an index json.
  // Default: 5 GiB, below the per-file limits of common hosting and filesystems.
  int64_t max_shard_bytes = int64_t{5} << 30;
};

// Writes `model` to `dir` (created if needed): config.json, the weights, tokenizer files. Each
// file is written atomically. Tied models store only model.embed_tokens.weight, as transformers
// does.
void SavePretrained(CausalLM& model, const std::string& dir, const SaveOptions& options = {});

// config.json (with torch_dtype `dtype`) and the tokenizer files of SaveOptions::tokenizer_dir,
// for writers that store the weights themselves (sharded checkpoints).
void WritePretrainedMetadata(const ModelConfig& config, torch::ScalarType dtype, const std::string& dir,
                             const std::string& tokenizer_dir);

}  // namespace dpo
