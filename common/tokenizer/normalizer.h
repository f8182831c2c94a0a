// tokenizer.json "normalizer": text -> normalized text, applied to each span of input that is not
// an added token. Supported types: NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace (String or
// Regex pattern), Strip, and Sequence of these. Offsets are not tracked (we return ids only).
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace dpo::tok {

class Regex;

class Normalizer {
 public:
  // Builds from the JSON node (null allowed: identity). `context` names file and field for errors.
  Normalizer(const nlohmann::json& node, const std::string& context);
  ~Normalizer();
  Normalizer(Normalizer&&) noexcept;

  bool empty() const { return steps_.empty(); }
  // Normalizes valid UTF-8 `text`.
  std::string Apply(std::string_view text) const;

 private:
  enum class Kind { kNfc, kNfd, kNfkc, kNfkd, kLowercase, kPrepend, kReplace, kStrip };
  struct Step {
    Kind kind;
    std::string a;                 // Prepend: prefix; Replace: literal pattern
    std::string b;                 // Replace: content
    std::shared_ptr<Regex> regex;  // Replace with a Regex pattern
    bool left = false, right = false;
  };
  void Add(const nlohmann::json& node, const std::string& context);
  std::vector<Step> steps_;
};

}  // namespace dpo::tok
