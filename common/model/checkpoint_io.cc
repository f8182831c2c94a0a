#include "common/model/checkpoint_io.h"

#include <cstdio>

#include <torch/torch.h>

#include "common/util/atomic_file.h"
#include "common/util/error.h"
#include "common/util/mapped_file.h"
#include "common/util/path_util.h"

namespace dpo {
namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

torch::ScalarType TorchDtype(const SafetensorsTensor& t, const std::string& context) {
  if (t.dtype == "F32") return torch::kFloat32;
  if (t.dtype == "F16") return torch::kFloat16;
  if (t.dtype == "BF16") return torch::kBFloat16;
  if (t.dtype == "F64") return torch::kFloat64;
  if (t.dtype == "I64") return torch::kInt64;
  if (t.dtype == "I32") return torch::kInt32;
  Fail(context, "dtype " + t.dtype + " is not supported (F32, F16, BF16, F64, I64, I32)");
}

}  // namespace

std::string SafetensorsDtypeName(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return "F32";
    case torch::kFloat16: return "F16";
    case torch::kBFloat16: return "BF16";
    case torch::kFloat64: return "F64";
    case torch::kInt64: return "I64";
    case torch::kInt32: return "I32";
    case torch::kInt16: return "I16";
    case torch::kInt8: return "I8";
    case torch::kUInt8: return "U8";
    case torch::kBool: return "BOOL";
    default: Fail("safetensors", std::string("no dtype name for ") + c10::toString(dtype));
  }
}

CheckpointReader::CheckpointReader(const std::string& path) : path_(path) {
  std::vector<std::string> files;
  std::map<std::string, std::string> weight_map;
  const std::string& dir = path;
  if (IsRegularFile(dir)) {
    files.push_back(path);
  } else if (PathExists(JoinPath(dir, kSingleFile))) {
    files.push_back(JoinPath(dir, kSingleFile));
  } else if (PathExists(JoinPath(dir, kIndexFile))) {
    const std::string index_path = JoinPath(dir, kIndexFile);
    weight_map = ParseSafetensorsIndex(MappedFile(index_path).view(), index_path);  // never a FIFO
    for (const auto& [name, file] : weight_map) {
      std::string shard = JoinPath(dir, file);
      if (std::find(files.begin(), files.end(), shard) == files.end()) files.push_back(shard);
    }
  } else {
    Fail(path, std::string("no ") + kSingleFile + " or " + kIndexFile + " found");
  }
  for (const auto& file : files) {
    files_.push_back(std::make_unique<SafetensorsFile>(file));
    const SafetensorsFile* f = files_.back().get();
    for (const auto& t : f->header().tensors) {
      auto [it, inserted] = index_.emplace(t.name, Location{f, &t});
      if (!inserted) {
        Fail(file, "tensor '" + t.name + "' also appears in " + it->second.file->path());
      }
    }
  }
  for (const auto& [name, file] : weight_map) {
    auto it = index_.find(name);
    if (it == index_.end() || BaseName(it->second.file->path()) != file) {
      Fail(JoinPath(dir, file), "tensor '" + name + "' listed in " + kIndexFile + " is not in this shard");
    }
  }
}

std::vector<std::string> CheckpointReader::TensorNames() const {
  std::vector<std::string> names;
  for (const auto& [name, loc] : index_) names.push_back(name);
  return names;
}

const CheckpointReader::Location& CheckpointReader::Find(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) Fail(path_, "tensor '" + name + "' is missing from the checkpoint");
  return it->second;
}

std::vector<int64_t> CheckpointReader::Shape(const std::string& name) const { return Find(name).tensor->shape; }

torch::ScalarType CheckpointReader::StoredDtype(const std::string& name) const {
  const Location& loc = Find(name);
  return TorchDtype(*loc.tensor, loc.file->path() + ": tensor '" + name + "'");
}

const std::string& CheckpointReader::FileOf(const std::string& name) const { return Find(name).file->path(); }

torch::Tensor CheckpointReader::Read(const std::string& name, torch::ScalarType dtype,
                                     const torch::Device& device) const {
  const Location& loc = Find(name);
  const std::string context = loc.file->path() + ": tensor '" + name + "'";
  torch::ScalarType stored = StoredDtype(name);
  if (c10::isFloatingType(stored) != c10::isFloatingType(dtype)) {
    Fail(context, "cannot convert " + loc.tensor->dtype + " to " + c10::toString(dtype));
  }
  std::string_view bytes = loc.file->Bytes(*loc.tensor);
  // Copy out of the mapping (its data may not be aligned for the element type), then convert.
  torch::Tensor raw = torch::empty(loc.tensor->shape, torch::TensorOptions().dtype(stored));
  std::memcpy(raw.data_ptr(), bytes.data(), bytes.size());
  // One pass over the stored values, before conversion can hide (or make) an overflow.
  if (c10::isFloatingType(stored) && !torch::isfinite(raw).all().item<bool>()) {
    const int64_t bad = (~torch::isfinite(raw)).sum().item<int64_t>();
    Fail(context, "holds " + std::to_string(bad) + " non-finite value(s) (NaN or infinity)", ErrorCode::kBadModel);
  }
  return raw.to(device, dtype);
}

void WriteTensors(const std::string& path, const NamedTensors& tensors) {
  std::vector<torch::Tensor> host;  // keeps the CPU copies alive while writing
  std::vector<SafetensorsEntry> entries;
  for (const auto& [name, t] : tensors) {
    host.push_back(t.detach().to(torch::kCPU).contiguous());
    const torch::Tensor& h = host.back();
    entries.push_back(
        {name, SafetensorsDtypeName(h.scalar_type()), h.sizes().vec(), h.data_ptr(), static_cast<size_t>(h.nbytes())});
  }
  WriteSafetensors(path, entries);
}

void WriteCheckpoint(const std::string& dir, const NamedTensors& tensors, int64_t max_shard_bytes) {
  MakeDirectories(dir);
  int64_t total = 0;
  for (const auto& [name, t] : tensors) total += static_cast<int64_t>(t.nbytes());
  if (total <= max_shard_bytes) {
    WriteTensors(JoinPath(dir, kSingleFile), tensors);
    RemoveFileIfExists(JoinPath(dir, kIndexFile));
    return;
  }
  std::vector<NamedTensors> shards(1);
  int64_t shard_bytes = 0;
  for (const auto& item : tensors) {
    int64_t n = static_cast<int64_t>(item.second.nbytes());
    if (!shards.back().empty() && shard_bytes + n > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(item);
    shard_bytes += n;
  }
  std::map<std::string, std::string> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    char file[64];
    std::snprintf(file, sizeof(file), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    WriteTensors(JoinPath(dir, file), shards[i]);
    for (const auto& item : shards[i]) weight_map[item.first] = file;
  }
  WriteFileAtomically(JoinPath(dir, kIndexFile), SafetensorsIndexJson(weight_map, static_cast<uint64_t>(total)));
  RemoveFileIfExists(JoinPath(dir, kSingleFile));
}

}  // namespace dpo
