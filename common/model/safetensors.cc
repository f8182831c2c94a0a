#include "common/model/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/util/atomic_file.h"
#include "common/util/error.h"

namespace dpo {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors bytes are little-endian; a big-endian host needs byte swapping");

using nlohmann::json;

std::string TensorContext(std::string_view source, std::string_view name) {
  return std::string(source) + ": tensor '" + std::string(name) + "'";
}

// Multiplies with overflow detection.
bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

uint64_t ReadU64(const json& v, const std::string& ctx, const char* what) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0)) {
    Fail(ctx, std::string(what) + " must be a non-negative integer, got " + v.dump());
  }
  return v.get<uint64_t>();
}

}  // namespace

uint64_t SafetensorsTensor::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

const SafetensorsTensor* SafetensorsHeader::Find(std::string_view name) const {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

size_t SafetensorsElementSize(std::string_view dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2") {
    return 1;
  }
  return 0;
}

SafetensorsHeader ParseSafetensorsHeader(std::string_view bytes, std::string_view source) {
  const std::string src(source);
  if (bytes.size() < 8) {
    Fail(src, "file is " + std::to_string(bytes.size()) + " bytes, shorter than the 8-byte safetensors header length");
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > bytes.size() - 8) {
    Fail(src, "header length " + std::to_string(header_len) + " runs past the end of the " +
                  std::to_string(bytes.size()) + "-byte file");
  }
  json root = json::parse(bytes.substr(8, header_len), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) Fail(src, "header is not valid JSON");
  if (!root.is_object()) Fail(src, "header is not a JSON object");

  SafetensorsHeader header;
  header.data_offset = 8 + header_len;
  const uint64_t data_size = bytes.size() - header.data_offset;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) Fail(src, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) {
          Fail(src, "__metadata__ value of '" + m.key() + "' is not a string");
        }
        header.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string ctx = TensorContext(src, name);
    if (!v.is_object()) Fail(ctx, "entry is not an object");
    SafetensorsTensor t;
    t.name = name;
    auto dtype = v.find("dtype");
    if (dtype == v.end() || !dtype->is_string()) Fail(ctx, "missing string 'dtype'");
    t.dtype = dtype->get<std::string>();
    t.element_size = SafetensorsElementSize(t.dtype);
    if (t.element_size == 0) Fail(ctx, "unknown dtype '" + t.dtype + "'");
    auto shape = v.find("shape");
    if (shape == v.end() || !shape->is_array()) Fail(ctx, "missing array 'shape'");
    uint64_t expected = t.element_size;
    for (const json& d : *shape) {
      uint64_t dim = ReadU64(d, ctx, "shape entry");
      if (dim > uint64_t{INT64_MAX} || MulOverflows(expected, dim, &expected)) {
        Fail(ctx, "shape " + shape->dump() + " overflows");
      }
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    auto offsets = v.find("data_offsets");
    if (offsets == v.end() || !offsets->is_array() || offsets->size() != 2) {
      Fail(ctx, "missing 'data_offsets' [begin, end]");
    }
    t.begin = ReadU64((*offsets)[0], ctx, "data_offsets begin");
    t.end = ReadU64((*offsets)[1], ctx, "data_offsets end");
    if (t.begin > t.end || t.end > data_size) {
      Fail(ctx, "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] out of range of the " +
                    std::to_string(data_size) + "-byte data section");
    }
    if (t.end - t.begin != expected) {
      Fail(ctx, "shape " + shape->dump() + " of " + t.dtype + " needs " + std::to_string(expected) +
                    " bytes but data_offsets span " + std::to_string(t.end - t.begin));
    }
    header.tensors.push_back(std::move(t));
  }
  std::sort(header.tensors.begin(), header.tensors.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < header.tensors.size(); ++i) {
    const auto& prev = header.tensors[i - 1];
    const auto& cur = header.tensors[i];
    // Empty tensors occupy no bytes and may share an offset.
    if (cur.begin < prev.end && cur.end > cur.begin) {
      Fail(TensorContext(src, cur.name), "data_offsets overlap those of tensor '" + prev.name + "'");
    }
  }
  return header;
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(path), header_(ParseSafetensorsHeader(file_.view(), path)) {}

std::string_view SafetensorsFile::Bytes(const SafetensorsTensor& tensor) const {
  return file_.view().substr(header_.data_offset + tensor.begin, tensor.end - tensor.begin);
}

std::map<std::string, std::string> ParseSafetensorsIndex(std::string_view text, std::string_view source) {
  const std::string src(source);
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) Fail(src, "not a JSON object");
  auto map = root.find("weight_map");
  if (map == root.end() || !map->is_object()) Fail(src, "field 'weight_map': missing object");
  std::map<std::string, std::string> out;
  for (auto it = map->begin(); it != map->end(); ++it) {
    if (!it.value().is_string()) {
      Fail(src, "field 'weight_map': entry '" + it.key() + "' is not a file name");
    }
    std::string file = it.value().get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos || file == "..") {
      Fail(src,
           "field 'weight_map': entry '" + it.key() + "' names '" + file + "', not a file in the checkpoint directory");
    }
    out[it.key()] = std::move(file);
  }
  return out;
}

std::string SafetensorsIndexJson(const std::map<std::string, std::string>& weight_map, uint64_t total_size) {
  json root = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  return root.dump(2) + "\n";
}

void WriteSafetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries) {
  // Larger elements first, so every tensor starts aligned to its element size while the data
  // stays contiguous (the safetensors library rejects gaps between tensors).
  std::vector<const SafetensorsEntry*> order;
  order.reserve(entries.size());
  for (const auto& e : entries) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return SafetensorsElementSize(a->dtype) > SafetensorsElementSize(b->dtype);
  });
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const SafetensorsEntry* e : order) {
    size_t element = SafetensorsElementSize(e->dtype);
    if (element == 0) Fail(TensorContext(path, e->name), "unknown dtype '" + e->dtype + "'");
    uint64_t numel = 1;
    for (int64_t d : e->shape) {
      if (d < 0) Fail(TensorContext(path, e->name), "negative dimension");
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * element != e->nbytes) {
      Fail(TensorContext(path, e->name), "byte size " + std::to_string(e->nbytes) + " disagrees with its shape");
    }
    header[e->name] = {{"dtype", e->dtype}, {"shape", e->shape}, {"data_offsets", {offset, offset + e->nbytes}}};
    offset += e->nbytes;
  }
  std::string text = header.dump();
  // Pad with spaces (valid JSON whitespace) so the data section starts 8-byte aligned.
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  uint64_t len = text.size();
  AtomicWriter out(path);
  out.Write(&len, 8);
  out.Write(text.data(), text.size());
  for (const SafetensorsEntry* e : order) out.Write(e->data, e->nbytes);
  out.Commit();
}

}  // namespace dpo
