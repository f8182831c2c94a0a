// Fuzzes loading arbitrary tokenizer.json content (Tokenizer::FromJson): it must either load or
// throw dpo::Error, never crash or throw anything else. A tokenizer that loads then encodes and
// decodes a fixed text.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/tokenizer/tokenizer.h"
#include "common/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view json(reinterpret_cast<const char*>(data), size);
  std::unique_ptr<dpo::Tokenizer> tok;
  try {
    tok = dpo::Tokenizer::FromJson(json, "", "fuzz/tokenizer.json");
  } catch (const dpo::Error&) {
    return 0;
  }
  auto ids = tok->Encode("Hello world 123 <s> caf\xC3\xA9\n\n  x", true);
  tok->Decode(ids, false);
  return 0;
}
