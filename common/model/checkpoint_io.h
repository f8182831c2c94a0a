// Torch tensors in and out of safetensors files and Hugging Face checkpoint directories
// (model.safetensors, or shards listed by model.safetensors.index.json).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "common/model/safetensors.h"

namespace dpo {

// "F32" etc. for a torch dtype; throws dpo::Error for dtypes safetensors has no name for.
std::string SafetensorsDtypeName(torch::ScalarType dtype);

// Tensors of one checkpoint, memory-mapped; Read copies one tensor out at a time, so loading
// never holds a second full copy of the model in host memory.
class CheckpointReader {
 public:
  // `path` is a directory holding model.safetensors or model.safetensors.index.json, or a single
  // .safetensors file. Throws dpo::Error naming the path when neither is there or a file is bad.
  explicit CheckpointReader(const std::string& path);

  std::vector<std::string> TensorNames() const;
  bool Contains(const std::string& name) const { return index_.count(name) != 0; }
  // Shape of tensor `name` as stored. Throws dpo::Error if absent.
  std::vector<int64_t> Shape(const std::string& name) const;
  // Dtype of tensor `name` as stored. Throws dpo::Error if absent or of an unsupported dtype.
  torch::ScalarType StoredDtype(const std::string& name) const;
  // The file holding tensor `name`, for error messages. Throws dpo::Error if absent.
  const std::string& FileOf(const std::string& name) const;
  // Tensor `name` converted to `dtype` on `device`. Floating types F32/F16/BF16/F64 and integer
  // types I64/I32 convert; others throw. Throws dpo::Error naming the file and tensor if absent,
  // or if it holds a NaN or infinity: no weight or optimizer state is ever loaded non-finite.
  torch::Tensor Read(const std::string& name, torch::ScalarType dtype, const torch::Device& device = torch::kCPU) const;

 private:
  struct Location {
    const SafetensorsFile* file;
    const SafetensorsTensor* tensor;
  };
  const Location& Find(const std::string& name) const;
  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Location> index_;
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes `tensors` (any device; stored as their own dtype) to one safetensors file, atomically.
void WriteTensors(const std::string& path, const NamedTensors& tensors);

// Writes `tensors` into directory `dir` as model.safetensors, or, when their total size exceeds
// `max_shard_bytes`, as model-0000i-of-0000n.safetensors shards (each at most max_shard_bytes
// unless one tensor alone is larger) plus model.safetensors.index.json. Stale checkpoint files
// of the other layout are removed so transformers cannot pick them up.
void WriteCheckpoint(const std::string& dir, const NamedTensors& tensors, int64_t max_shard_bytes);

}  // namespace dpo
