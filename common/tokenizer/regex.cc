#include "common/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/util/error.h"

namespace dpo::tok {

namespace {

// Per-thread PCRE2 scratch: match data for the whole-match offsets and a JIT stack large
// enough for long whitespace runs (the 32 KiB default overflows on `\s+(?!\S)` over ~10k spaces).
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  MatchScratch() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~MatchScratch() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
};

MatchScratch& Scratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

}  // namespace

std::string HfCompatiblePattern(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '\\' && i + 1 < p.size()) {
      char c = p[i + 1];
      if (c == 's') {
        out += "\\p{White_Space}";
      } else if (c == 'S') {
        out += "\\P{White_Space}";
      } else {
        out += p[i];
        out += c;
      }
      ++i;
    } else {
      out += p[i];
    }
  }
  return out;
}

Regex::Regex(const std::string& pattern, const std::string& context) : context_(context) {
  std::string compiled = HfCompatiblePattern(pattern);
  int err = 0;
  PCRE2_SIZE offset = 0;
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(),
                             PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    Fail(context, "bad regex at offset " + std::to_string(offset) + ": " +
                      reinterpret_cast<const char*>(msg) + " in /" + pattern + "/");
  }
  // JIT is an optimisation: when unavailable (some platforms) the interpreter gives equal results.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

bool Regex::Find(std::string_view text, size_t pos, size_t* start, size_t* end) const {
  MatchScratch& s = Scratch();
  // Inputs are validated (or repaired) UTF-8 before they reach a Regex: skip the re-check.
  int rc = pcre2_match(static_cast<pcre2_code*>(code_), reinterpret_cast<PCRE2_SPTR>(text.data()),
                       text.size(), pos, PCRE2_NO_UTF_CHECK, s.data, s.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof(msg));
    Fail(context_, std::string("regex match failed: ") + reinterpret_cast<const char*>(msg),
         ErrorCode::kBadData);
  }
  PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
  *start = ov[0];
  *end = ov[1];
  return true;
}

}  // namespace dpo::tok
