// tokenizer.json "pre_tokenizer": splits a normalized span into words that the model encodes
// independently. Supported: Split (String or Regex pattern, all five behaviors, invert),
// ByteLevel, Metaspace, and Sequence of these.
//
// Byte-level tokenizers run in raw-byte space: the ByteLevel step does not map bytes to GPT-2's
// printable characters; instead the BPE model's vocabulary is mapped back to bytes at load time
// (one mapped character is exactly one byte, so merges see the same symbols).
#pragma once

#include <deque>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace dpo::tok {

class Regex;

// Storage for pieces a step had to rewrite (prefix added, spaces replaced); pieces that are
// plain substrings of the input point into it instead, so the common path does not allocate.
using PieceArena = std::deque<std::string>;

class PreTokenizer {
 public:
  PreTokenizer(const nlohmann::json& node, const std::string& context);
  ~PreTokenizer();
  PreTokenizer(PreTokenizer&&) noexcept;

  // True when a ByteLevel step is present: the model then works on raw bytes.
  bool byte_level() const { return byte_level_; }
  // Appends the words of `span` to *words. `at_start`: span begins at offset 0 of the input
  // (Metaspace's prepend_scheme "first" looks at it).
  void Apply(std::string_view span, bool at_start, std::vector<std::string_view>* words, PieceArena* arena) const;

 private:
  enum class Kind { kSplit, kByteLevel, kMetaspace };
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
  enum class Prepend { kAlways, kFirst, kNever };
  struct Step {
    Kind kind;
    std::shared_ptr<Regex> regex;  // Split (Regex), ByteLevel with use_regex
    std::string literal;           // Split (String)
    Behavior behavior = Behavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;  // ByteLevel
    std::string replacement;        // Metaspace
    Prepend prepend = Prepend::kAlways;
    bool split = true;  // Metaspace
  };
  void Add(const nlohmann::json& node, const std::string& context);
  void Split(const Step& step, std::string_view piece, std::vector<std::string_view>* out) const;
  std::vector<Step> steps_;
  bool byte_level_ = false;
};

}  // namespace dpo::tok
