// libFuzzer target: the safetensors header parser on arbitrary file bytes. Must never crash,
// hang or read out of bounds; malformed input must end in a dpo::Error. Every tensor the parser
// accepts must have a byte range inside the data section that matches its shape.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/model/safetensors.h"
#include "common/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    dpo::SafetensorsHeader header = dpo::ParseSafetensorsHeader(bytes, "fuzz.safetensors");
    const uint64_t data_size = size - header.data_offset;
    for (const auto& t : header.tensors) {
      if (t.begin > t.end || t.end > data_size) std::abort();
      if (t.numel() * t.element_size != t.end - t.begin) std::abort();
    }
  } catch (const dpo::Error&) {
  }
  return 0;
}
