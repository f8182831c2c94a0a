// Unicode character properties for the tokenizer's regexes, from unicode_tables.h (Unicode 16.0,
// the version of HF tokenizers' regex engine) rather than the machine's PCRE2 tables: the general
// category of a code point, and the code point ranges of a \p{..} class, which regex.cc writes
// into a pattern as explicit ranges before PCRE2 compiles it.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/tokenizer/unicode_tables.h"

namespace dpo::tok {

// Inclusive range of code points.
struct CodePointRange {
  char32_t first, last;
};

// General category of `cp` (Cn for unassigned code points and for cp > U+10FFFF).
ucd::Category GeneralCategory(char32_t cp);

// The set of general categories (bit i: ucd::Category i) that a property name denotes, spelled
// as Oniguruma and PCRE2 accept it: one letter (L, M, N, P, S, Z, C: the major class), two
// letters (Lu, Nd, ...), or L& / LC (Lu, Ll, Lt); case-insensitive. 0 when `name` is not a
// general category (a script, a binary property, ...).
uint32_t CategoryMask(std::string_view name);

// Sorted, maximal ranges of the code points whose category is in `mask`.
std::vector<CodePointRange> CategoryRanges(uint32_t mask);

// Sorted ranges of Unicode White_Space (unicode_util.h's IsWhiteSpace).
std::vector<CodePointRange> WhiteSpaceRanges();

// The code points of U+0000..U+10FFFF not in the sorted, disjoint `ranges`.
std::vector<CodePointRange> Complement(const std::vector<CodePointRange>& ranges);

// The code points of `a` not in `b` (both sorted and disjoint).
std::vector<CodePointRange> Subtract(const std::vector<CodePointRange>& a, const std::vector<CodePointRange>& b);

}  // namespace dpo::tok
