#include "common/tokenizer/unicode_normalize.h"

#include <algorithm>
#include <vector>

#include "common/tokenizer/unicode_tables.h"
#include "common/tokenizer/unicode_util.h"

namespace dpo::tok {

namespace {

// Hangul syllables decompose and compose arithmetically (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kSCount = 11172;

uint8_t CombiningClass(char32_t cp) {
  if (cp < 0x300) return 0;
  const ucd::CombiningRun* end = ucd::kCombiningRuns + ucd::kCombiningRunsCount;
  const ucd::CombiningRun* run = std::lower_bound(
      ucd::kCombiningRuns, end, cp, [](const ucd::CombiningRun& r, char32_t value) { return r.last < value; });
  return run != end && run->first <= cp ? run->ccc : 0;
}

// Appends the full decomposition of `cp` (itself when it has none) to *out.
void Decompose(char32_t cp, bool compatibility, std::vector<char32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    char32_t index = cp - kSBase;
    out->push_back(kLBase + index / (kVCount * kTCount));
    out->push_back(kVBase + index % (kVCount * kTCount) / kTCount);
    if (index % kTCount != 0) out->push_back(kTBase + index % kTCount);
    return;
  }
  const ucd::Decomposition* table = compatibility ? ucd::kCompatibilityDecompositions : ucd::kCanonicalDecompositions;
  const ucd::Decomposition* end =
      table + (compatibility ? ucd::kCompatibilityDecompositionsCount : ucd::kCanonicalDecompositionsCount);
  const ucd::Decomposition* d =
      std::lower_bound(table, end, cp, [](const ucd::Decomposition& e, char32_t value) { return e.cp < value; });
  if (d == end || d->cp != cp) {
    out->push_back(cp);
    return;
  }
  out->insert(out->end(), ucd::kDecompositionPool + d->offset, ucd::kDecompositionPool + d->offset + d->length);
}

// The primary composite of starter `first` followed by `second`, or 0 when there is none.
char32_t Compose(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase && second < kVBase + kVCount)
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 && second > kTBase &&
      second < kTBase + kTCount)
    return first + (second - kTBase);
  const ucd::Composition* end = ucd::kCompositions + ucd::kCompositionsCount;
  const ucd::Composition* c =
      std::lower_bound(ucd::kCompositions, end, std::make_pair(first, second),
                       [](const ucd::Composition& e, const std::pair<char32_t, char32_t>& key) {
                         return e.first != key.first ? e.first < key.first : e.second < key.second;
                       });
  return c != end && c->first == first && c->second == second ? c->composite : 0;
}

// Canonical ordering: stable-sorts each run of non-starters by combining class.
void Reorder(std::vector<char32_t>* cps) {
  auto& v = *cps;
  for (size_t i = 0; i < v.size();) {
    if (CombiningClass(v[i]) == 0) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < v.size() && CombiningClass(v[end]) != 0) ++end;
    std::stable_sort(v.begin() + i, v.begin() + end,
                     [](char32_t a, char32_t b) { return CombiningClass(a) < CombiningClass(b); });
    i = end;
  }
}

// Canonical composition in place: each character not blocked from the last starter and
// composing with it replaces the starter.
void ComposeAll(std::vector<char32_t>* cps) {
  auto& v = *cps;
  if (v.empty()) return;
  size_t out = 1;
  bool have_starter = CombiningClass(v[0]) == 0;
  size_t starter = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    uint8_t ccc = CombiningClass(v[i]);
    // Not blocked: nothing lies between the starter and v[i], or what lies there (the last
    // character kept) has a lower, nonzero class.
    uint8_t prev = CombiningClass(v[out - 1]);
    bool adjacent = out - 1 == starter;
    if (have_starter && (adjacent || (prev != 0 && prev < ccc))) {
      if (char32_t composite = Compose(v[starter], v[i])) {
        v[starter] = composite;
        continue;
      }
    }
    if (ccc == 0) {
      have_starter = true;
      starter = out;
    }
    v[out++] = v[i];
  }
  v.resize(out);
}

// Normalizes the non-ASCII stretch `s` (which may begin with one ASCII character).
void NormalizeStretch(std::string_view s, NormalForm form, std::string* out) {
  thread_local std::vector<char32_t> cps;
  cps.clear();
  bool compatibility = form == NormalForm::kNfkc || form == NormalForm::kNfkd;
  for (size_t i = 0; i < s.size();) Decompose(NextCodePoint(s, &i), compatibility, &cps);
  Reorder(&cps);
  if (form == NormalForm::kNfc || form == NormalForm::kNfkc) ComposeAll(&cps);
  for (char32_t cp : cps) AppendUtf8(cp, out);
}

}  // namespace

std::string Normalize(std::string_view s, NormalForm form) {
  // Only the non-ASCII stretches need work. Cutting before an ASCII character is safe: ASCII is
  // a starter that decomposes to itself and is never the second character of a composition, so
  // no normal form reorders or composes across it. Each stretch takes the ASCII character
  // before it, with which its leading combining mark may compose.
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t run = i;
    while (run < s.size() && static_cast<unsigned char>(s[run]) < 0x80) ++run;
    if (run == s.size()) {
      out.append(s, i, run - i);
      break;
    }
    size_t unit = run > i ? run - 1 : run;
    out.append(s, i, unit - i);
    size_t end = run;
    while (end < s.size() && static_cast<unsigned char>(s[end]) >= 0x80) ++end;
    NormalizeStretch(s.substr(unit, end - unit), form, &out);
    i = end;
  }
  return out;
}

}  // namespace dpo::tok
