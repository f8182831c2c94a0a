#include "common/tokenizer/unicode_properties.h"

#include <algorithm>
#include <cctype>

#include "common/tokenizer/unicode_util.h"

namespace dpo::tok {

namespace {

constexpr char32_t kMaxCodePoint = 0x10FFFF;

uint32_t Bit(ucd::Category c) { return 1u << static_cast<unsigned>(c); }

// Appends [first, last] to sorted `out`, merging with the last range when adjacent.
void AppendRange(char32_t first, char32_t last, std::vector<CodePointRange>* out) {
  if (!out->empty() && out->back().last + 1 == first) {
    out->back().last = last;
  } else {
    out->push_back({first, last});
  }
}

}  // namespace

ucd::Category GeneralCategory(char32_t cp) {
  if (cp > kMaxCodePoint) return ucd::Category::kCn;
  const ucd::CategoryRun* end = ucd::kCategoryRuns + ucd::kCategoryRunsCount;
  // The last run whose first is <= cp (the first run starts at U+0000).
  const ucd::CategoryRun* run = std::upper_bound(
      ucd::kCategoryRuns, end, cp, [](char32_t value, const ucd::CategoryRun& r) { return value < r.first; });
  return static_cast<ucd::Category>((run - 1)->category);
}

uint32_t CategoryMask(std::string_view name) {
  std::string n;
  for (char c : name) n += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "l&" || n == "lc") return Bit(ucd::Category::kLu) | Bit(ucd::Category::kLl) | Bit(ucd::Category::kLt);
  uint32_t mask = 0;
  for (size_t i = 0; i < static_cast<size_t>(ucd::Category::kCount); ++i) {
    std::string_view cat = ucd::kCategoryNames[i];
    bool major = n.size() == 1 && std::tolower(cat[0]) == n[0];
    bool exact = n.size() == 2 && std::tolower(cat[0]) == n[0] && std::tolower(cat[1]) == n[1];
    if (major || exact) mask |= 1u << i;
  }
  return mask;
}

std::vector<CodePointRange> CategoryRanges(uint32_t mask) {
  std::vector<CodePointRange> out;
  for (size_t i = 0; i < ucd::kCategoryRunsCount; ++i) {
    if (!(mask & (1u << ucd::kCategoryRuns[i].category))) continue;
    char32_t last = i + 1 < ucd::kCategoryRunsCount ? ucd::kCategoryRuns[i + 1].first - 1 : kMaxCodePoint;
    AppendRange(ucd::kCategoryRuns[i].first, last, &out);
  }
  return out;
}

std::vector<CodePointRange> WhiteSpaceRanges() {
  // White_Space has no code point above U+3000.
  std::vector<CodePointRange> out;
  for (char32_t cp = 0; cp <= 0x3000; ++cp)
    if (IsWhiteSpace(cp)) AppendRange(cp, cp, &out);
  return out;
}

std::vector<CodePointRange> Complement(const std::vector<CodePointRange>& ranges) {
  std::vector<CodePointRange> out;
  char32_t next = 0;
  for (const CodePointRange& r : ranges) {
    if (r.first > next) out.push_back({next, r.first - 1});
    next = r.last + 1;
  }
  if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
  return out;
}

std::vector<CodePointRange> Subtract(const std::vector<CodePointRange>& a, const std::vector<CodePointRange>& b) {
  // a minus b is a intersected with b's complement: walk both sorted lists once.
  std::vector<CodePointRange> keep = Complement(b), out;
  size_t j = 0;
  for (const CodePointRange& r : a) {
    while (j < keep.size() && keep[j].last < r.first) ++j;
    for (size_t k = j; k < keep.size() && keep[k].first <= r.last; ++k)
      out.push_back({std::max(r.first, keep[k].first), std::min(r.last, keep[k].last)});
  }
  return out;
}

}  // namespace dpo::tok
