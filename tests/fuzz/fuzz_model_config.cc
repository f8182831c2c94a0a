// libFuzzer target: config.json parsing (ModelConfig::FromJson) on arbitrary text. Must never
// crash or overflow; bad input must end in a dpo::Error. An accepted config must survive a
// ToJson round trip with the same architecture.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/config/model_config.h"
#include "common/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    dpo::ModelConfig config = dpo::ModelConfig::FromJson(text, "fuzz/config.json");
    dpo::ModelConfig again = dpo::ModelConfig::FromJson(config.ToJson("bfloat16"), "round trip");
    if (again.NumParameters() != config.NumParameters() || again.head_dim != config.head_dim ||
        again.rope_type != config.rope_type || again.qkv_bias != config.qkv_bias) {
      std::abort();
    }
  } catch (const dpo::Error&) {
  }
  return 0;
}
