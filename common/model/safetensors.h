// The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]},
// "__metadata__": {str: str}}, then the raw tensor bytes. Torch-free (dpo_core), so the header
// parser is fuzzed; the torch adapter is common/model/checkpoint_io.h.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/mapped_file.h"

namespace dpo {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;        // "F32", "BF16", ... as in the file.
  size_t element_size = 0;  // Bytes per element of dtype.
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // Byte range relative to the start of the data section.
  uint64_t end = 0;
  uint64_t numel() const;
};

struct SafetensorsHeader {
  uint64_t data_offset = 0;                // 8 + header length: where the data section starts in the file.
  std::vector<SafetensorsTensor> tensors;  // In file order of data_offsets.
  std::map<std::string, std::string> metadata;
  // nullptr when absent.
  const SafetensorsTensor* Find(std::string_view name) const;
};

// Bytes per element for a safetensors dtype name, or 0 when the name is unknown.
size_t SafetensorsElementSize(std::string_view dtype);

// Parses and validates the header of a whole safetensors file `bytes` (header and data).
// Throws dpo::Error naming `source` (and the tensor) when the header length runs past the end,
// the header is not a JSON object, a dtype is unknown, a shape is invalid or disagrees with its
// byte range, or byte ranges overlap or run past the end of the data.
SafetensorsHeader ParseSafetensorsHeader(std::string_view bytes, std::string_view source);

// A safetensors file mapped read-only; tensor bytes are views into the mapping.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const SafetensorsHeader& header() const { return header_; }
  const std::string& path() const { return file_.path(); }
  // The raw bytes of `tensor` (little-endian).
  std::string_view Bytes(const SafetensorsTensor& tensor) const;

 private:
  MappedFile file_;
  SafetensorsHeader header_;
};

// model.safetensors.index.json: maps each tensor name to the shard file holding it.
// Throws dpo::Error naming `source` when "weight_map" is missing or not {str: str}.
std::map<std::string, std::string> ParseSafetensorsIndex(std::string_view text, std::string_view source);
std::string SafetensorsIndexJson(const std::map<std::string, std::string>& weight_map, uint64_t total_size);

// One tensor to write: `data` holds `nbytes` little-endian bytes of dtype/shape.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes a safetensors file atomically (temp file in the same directory, fsync, rename), with
// __metadata__ {"format": "pt"} and every tensor's data 8-byte aligned. Throws dpo::Error naming
// `path` on an I/O failure or an entry whose byte size disagrees with its shape.
void WriteSafetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries);

}  // namespace dpo
