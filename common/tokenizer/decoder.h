// tokenizer.json "decoder": token strings -> text. Supported: ByteLevel, Metaspace, Replace,
// ByteFallback, Fuse, Strip, and Sequence of these, each with HF's decode_chain semantics
// (every step maps a list of strings to a list of strings). Without a decoder, tokens are
// joined by single spaces, as HF does.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace dpo::tok {

class Decoder {
 public:
  Decoder(const nlohmann::json& node, const std::string& context);

  // Decodes token strings; the result is valid UTF-8 (bytes that do not form UTF-8 become
  // U+FFFD as HF's from_utf8_lossy / ByteFallback rules say).
  std::string Decode(std::vector<std::string> tokens) const;

 private:
  enum class Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip };
  struct Step {
    Kind kind;
    std::string a, b;            // Replace: pattern, content; Metaspace: replacement; Strip: content
    bool prepend = true;         // Metaspace: drop the first token's replacement characters
    size_t start = 0, stop = 0;  // Strip
  };
  void Add(const nlohmann::json& node, const std::string& context);
  std::vector<Step> steps_;
  bool present_ = false;
};

}  // namespace dpo::tok
