#include "common/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <map>
#include <mutex>
#include <vector>

#include "common/tokenizer/unicode_properties.h"
#include "common/tokenizer/unicode_util.h"
#include "common/util/error.h"

namespace dpo::tok {

namespace {

// Per-thread PCRE2 scratch: match data for the whole-match offsets and a JIT stack large
// enough for long whitespace runs (the 32 KiB default overflows on `\s+(?!\S)` over ~10k spaces).
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(size_t{32} * 1024, size_t{64} * 1024 * 1024, nullptr);
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

// Appends `ranges` as class items (\x{A}-\x{B}). Surrogates are cut out: PCRE2 refuses them in
// UTF mode, and the text a Regex sees is valid UTF-8, which never holds one.
void AppendClassItems(const std::vector<CodePointRange>& ranges, std::string* out) {
  auto item = [out](char32_t first, char32_t last) {
    char buf[40];
    if (first == last) {
      std::snprintf(buf, sizeof(buf), "\\x{%X}", static_cast<unsigned>(first));
    } else {
      std::snprintf(buf, sizeof(buf), "\\x{%X}-\\x{%X}", static_cast<unsigned>(first), static_cast<unsigned>(last));
    }
    *out += buf;
  };
  for (const CodePointRange& r : ranges) {
    if (r.first < 0xD800) item(r.first, std::min<char32_t>(r.last, 0xD7FF));
    if (r.last > 0xDFFF) item(std::max<char32_t>(r.first, 0xE000), r.last);
  }
}

// The code points that PCRE2's own tables put in class item `native` (such as \p{L}), probed
// once per item and process by matching [native]+ over a string of every code point (~4 MB,
// some milliseconds with JIT).
const std::vector<CodePointRange>& NativeRanges(const std::string& native) {
  static std::mutex mutex;
  static std::map<std::string, std::vector<CodePointRange>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto [it, inserted] = cache.try_emplace(native);
  if (!inserted) return it->second;
  std::string text;  // every code point but the surrogates, in order
  text.reserve(size_t{4} * 0x110000);
  for (char32_t cp = 0; cp <= 0x10FFFF; ++cp)
    if (cp < 0xD800 || cp > 0xDFFF) AppendUtf8(cp, &text);
  std::string pattern = "[" + native + "]+";
  int err = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                   &err, &offset, nullptr);
  if (code == nullptr) Fail("regex", "PCRE2 does not know " + native);
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  for (size_t pos = 0; pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos,
                                   PCRE2_NO_UTF_CHECK, data, nullptr) > 0;) {
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data);
    size_t start = ov[0], end = ov[1], last = end - 1;
    while ((static_cast<unsigned char>(text[last]) & 0xC0) == 0x80) --last;
    char32_t first_cp = NextCodePoint(text, &start), last_cp = NextCodePoint(text, &last);
    // The string skips the surrogates: a run across them is two ranges.
    if (first_cp < 0xD800 && last_cp > 0xDFFF) {
      it->second.push_back({first_cp, 0xD7FF});
      it->second.push_back({0xE000, last_cp});
    } else {
      it->second.push_back({first_cp, last_cp});
    }
    pos = end;
  }
  pcre2_match_data_free(data);
  pcre2_code_free(code);
  return it->second;
}

// Appends the class `ours` (sorted ranges), or its complement when `negated`: PCRE2's own item
// `native` plus the code points its tables miss, when they hold none that `ours` lacks (fast:
// PCRE2 looks a property up in two steps, while explicit ranges are tried one by one); else
// every range. `negated_native`, when not empty, is the item for the complement of `native`
// (\P{..}). `in_class`: inside [...], items only; outside, the item alone where it suffices
// (PCRE2 optimizes a bare \p{..} better than a bracketed one), else a bracketed class.
void AppendClass(const std::vector<CodePointRange>& ours, const std::string& native, const std::string& negated_native,
                 bool negated, bool in_class, std::string* out) {
  const std::vector<CodePointRange>& theirs = NativeRanges(native);
  std::vector<CodePointRange> missing = Subtract(ours, theirs), extra = Subtract(theirs, ours);
  std::string item;
  std::vector<CodePointRange> ranges;
  if (!negated && extra.empty()) {
    item = native;
    ranges = std::move(missing);
  } else if (negated && !negated_native.empty() && missing.empty()) {
    item = negated_native;  // the complement of theirs, which lacks the complement's `extra`
    ranges = std::move(extra);
  } else {
    ranges = negated ? Complement(ours) : ours;
  }
  bool one_escape = ranges.empty() && !item.empty() && item.find('\\', 1) == std::string::npos;
  bool bare = in_class || one_escape;
  if (!bare) *out += '[';
  *out += item;
  AppendClassItems(ranges, out);
  if (!bare) *out += ']';
}

// PCRE2's item for the categories of `mask`: the major class when the mask is one, else one
// item per category.
std::string NativeCategoryItem(uint32_t mask, bool negated) {
  std::string major = std::string(1, ucd::kCategoryNames[std::countr_zero(mask)][0]);
  if (CategoryMask(major) == mask) return (negated ? "\\P{" : "\\p{") + major + "}";
  if (negated) return "";  // a union of \P items is not the complement of the union
  std::string out;
  for (size_t i = 0; i < static_cast<size_t>(ucd::Category::kCount); ++i)
    if (mask & (1u << i)) out += std::string("\\p{") + ucd::kCategoryNames[i] + "}";
  return out;
}

// A \p / \P escape at p[i] ('\\'): its property name and extent. False for anything else.
bool ParsePropertyEscape(std::string_view p, size_t i, bool* negated, std::string_view* name, size_t* length) {
  if (i + 2 >= p.size() || (p[i + 1] != 'p' && p[i + 1] != 'P')) return false;
  *negated = p[i + 1] == 'P';
  if (p[i + 2] != '{') {  // \pL: a one-letter name
    *name = p.substr(i + 2, 1);
    *length = 3;
    return true;
  }
  size_t close = p.find('}', i + 3);
  if (close == std::string_view::npos) return false;
  *name = p.substr(i + 3, close - i - 3);
  if (!name->empty() && (*name)[0] == '^') {
    *negated = !*negated;
    name->remove_prefix(1);
  }
  *length = close + 1 - i;
  return true;
}

}  // namespace

std::string HfCompatiblePattern(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 1024);
  bool in_class = false;
  auto append_class = [&](const std::vector<CodePointRange>& ours, const std::string& native,
                          const std::string& negated_native,
                          bool negated) { AppendClass(ours, native, negated_native, negated, in_class, &out); };
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      bool negated;
      std::string_view name;
      size_t length;
      uint32_t mask;
      if (p[i + 1] == 's' || p[i + 1] == 'S') {
        static const std::vector<CodePointRange> white_space = WhiteSpaceRanges();
        append_class(white_space, "\\p{White_Space}", "\\P{White_Space}", p[i + 1] == 'S');
        ++i;
      } else if (ParsePropertyEscape(p, i, &negated, &name, &length) && (mask = CategoryMask(name)) != 0) {
        append_class(CategoryRanges(mask), NativeCategoryItem(mask, false), NativeCategoryItem(mask, true), negated);
        i += length - 1;
      } else {
        out += c;
        out += p[++i];
      }
      continue;
    }
    if (!in_class && c == '[') {
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      // A POSIX class [:name:] inside a class: copied whole, its ']' does not close the class.
      size_t close = p.find(":]", i + 2);
      if (close != std::string_view::npos) {
        out.append(p.substr(i, close + 2 - i));
        i = close + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& pattern, const std::string& context) : context_(context) {
  std::string compiled = HfCompatiblePattern(pattern);
  int err = 0;
  PCRE2_SIZE offset = 0;
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(), PCRE2_UTF | PCRE2_UCP,
                             &err, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    Fail(context, "bad regex at offset " + std::to_string(offset) + ": " + reinterpret_cast<const char*>(msg) +
                      " in /" + pattern + "/");
  }
  // JIT is an optimisation: when unavailable (some platforms) the interpreter gives equal results.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

bool Regex::Find(std::string_view text, size_t pos, size_t* start, size_t* end) const {
  MatchScratch& s = Scratch();
  // Inputs are validated (or repaired) UTF-8 before they reach a Regex: skip the re-check.
  int rc = pcre2_match(static_cast<pcre2_code*>(code_), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos,
                       PCRE2_NO_UTF_CHECK, s.data, s.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof(msg));
    Fail(context_, std::string("regex match failed: ") + reinterpret_cast<const char*>(msg), ErrorCode::kBadData);
  }
  PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
  *start = ov[0];
  *end = ov[1];
  return true;
}

}  // namespace dpo::tok
