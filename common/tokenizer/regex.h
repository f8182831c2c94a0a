// A compiled Unicode regex (PCRE2 with JIT) that finds matches the way HF tokenizers' engine
// (Oniguruma) does for the patterns tokenizer.json files use: UTF + UCP, with \s and \S meaning
// Unicode White_Space (PCRE2's own \s also takes U+180E, Oniguruma's does not), and general
// category classes (\p{L}, \p{N}, \pL, \P{Lu}, \p{^N}, ...) of Unicode 16.0, HF's version, from
// unicode_properties.h whatever the machine's PCRE2 knows: both are written into the pattern as
// explicit code point ranges before it is compiled. Other properties (scripts, \w, \d, \b)
// still come from PCRE2's own tables.
//
// Thread-safety: a Regex is immutable after construction; FindAll may run concurrently (each
// thread keeps its own match data and JIT stack).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dpo::tok {

class Regex {
 public:
  // Compiles `pattern`. Throws dpo::Error naming `context` and the PCRE2 message on failure.
  // `context` (the tokenizer file and field) also names the regex when a match fails (PCRE2's
  // match or depth limit on pathological text); the caller adds which text it was.
  Regex(const std::string& pattern, const std::string& context);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls on_match(start, end) for each non-overlapping match in `text` (valid UTF-8), left to
  // right. An empty match advances by one character, as Oniguruma's find_iter does.
  template <typename F>
  void FindAll(std::string_view text, F&& on_match) const {
    size_t pos = 0;
    size_t start, end;
    while (pos <= text.size() && Find(text, pos, &start, &end)) {
      on_match(start, end);
      if (end == start) {
        if (end >= text.size()) break;
        pos = end + 1;
        while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
      } else {
        pos = end;
      }
    }
  }

 private:
  // First match at or after `pos`; false when there is none.
  bool Find(std::string_view text, size_t pos, size_t* start, size_t* end) const;
  std::string context_;
  void* code_ = nullptr;  // pcre2_code*
};

// Rewrites \s / \S and general category escapes (also inside classes) to explicit ranges; see
// the class comment.
std::string HfCompatiblePattern(std::string_view pattern);

}  // namespace dpo::tok
