// Unit tests of the Unicode tables and what is built on them: general categories (Unicode 16.0),
// \p{..} classes rewritten into PCRE2 patterns, and the normal forms (Unicode 9.0 data, UAX #15's
// examples). Exactness against HF on every code point is tests/oracle/test_unicode_classes.py.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/tokenizer/regex.h"
#include "common/tokenizer/unicode_normalize.h"
#include "common/tokenizer/unicode_properties.h"

namespace dpo::tok {
namespace {

using ucd::Category;

TEST(UnicodeTest, CategoriesAreUnicode16) {
  EXPECT_EQ(GeneralCategory(U'A'), Category::kLu);
  EXPECT_EQ(GeneralCategory(U'0'), Category::kNd);
  EXPECT_EQ(GeneralCategory(0x1C89), Category::kLu);   // CYRILLIC CAPITAL TJE, new in 16.0
  EXPECT_EQ(GeneralCategory(0x10D40), Category::kNd);  // GARAY DIGIT ZERO, new in 16.0
  EXPECT_EQ(GeneralCategory(0x0378), Category::kCn);
  EXPECT_EQ(GeneralCategory(0xD800), Category::kCs);
  EXPECT_EQ(GeneralCategory(0x10FFFD), Category::kCo);
  EXPECT_EQ(GeneralCategory(0x110000), Category::kCn);
}

TEST(UnicodeTest, CategoryNamesAsRegexesSpellThem) {
  auto bit = [](Category c) { return 1u << static_cast<unsigned>(c); };
  EXPECT_EQ(CategoryMask("N"), bit(Category::kNd) | bit(Category::kNl) | bit(Category::kNo));
  EXPECT_EQ(CategoryMask("lu"), bit(Category::kLu));
  EXPECT_EQ(CategoryMask("L&"), bit(Category::kLu) | bit(Category::kLl) | bit(Category::kLt));
  EXPECT_EQ(CategoryMask("Han"), 0u);
  std::vector<CodePointRange> digits = CategoryRanges(CategoryMask("Nd"));
  ASSERT_FALSE(digits.empty());
  EXPECT_EQ(digits[0].first, U'0');
  EXPECT_EQ(digits[0].last, U'9');
  std::vector<CodePointRange> rest = Complement(digits);
  EXPECT_EQ(rest.front().last, U'0' - 1);
  EXPECT_EQ(rest.back().last, 0x10FFFFu);
}

std::vector<std::string> Matches(const std::string& pattern, const std::string& text) {
  Regex regex(pattern, "test");
  std::vector<std::string> out;
  regex.FindAll(text, [&](size_t b, size_t e) { out.push_back(text.substr(b, e - b)); });
  return out;
}

TEST(UnicodeTest, PatternClassesUseTheTables) {
  const std::string tje = "\u1C89";  // a letter since Unicode 16.0, unassigned before
  EXPECT_EQ(Matches(R"(\p{L}+)", "x" + tje + "y 1"), std::vector<std::string>{"x" + tje + "y"});
  EXPECT_EQ(Matches(R"(\pL+)", tje + tje), std::vector<std::string>{tje + tje});
  EXPECT_EQ(Matches(R"(\P{L}+)", tje + "12"), std::vector<std::string>{"12"});
  EXPECT_EQ(Matches(R"(\p{^N}+)", tje + "12"), std::vector<std::string>{tje});
  // Inside a negated class, next to \s, as the llama3 / qwen3 patterns use them.
  EXPECT_EQ(Matches(R"( ?[^\s\p{L}\p{N}]+)", tje + " !?" + tje), std::vector<std::string>{" !?"});
  // U+180E is not White_Space (PCRE2's own \s would take it); a ']' first in a class is literal.
  EXPECT_EQ(Matches(R"(\s+)", "a\u180E\u3000b"), std::vector<std::string>{"\u3000"});
  EXPECT_EQ(Matches(R"([]\p{N}]+)", "a]1]b"), std::vector<std::string>{"]1]"});
}

TEST(UnicodeTest, NormalFormsFollowUax15) {
  EXPECT_EQ(Normalize("e\u0301", NormalForm::kNfc), "\u00E9");
  EXPECT_EQ(Normalize("\u00E9", NormalForm::kNfd), "e\u0301");
  // UAX #15's examples: reordering then composition; compatibility forms.
  EXPECT_EQ(Normalize("\u1E0B\u0323", NormalForm::kNfc), "\u1E0D\u0307");
  EXPECT_EQ(Normalize("\u1E9B\u0323", NormalForm::kNfkd), "s\u0323\u0307");
  EXPECT_EQ(Normalize("\u1E9B\u0323", NormalForm::kNfkc), "\u1E69");
  EXPECT_EQ(Normalize("\uFB01x", NormalForm::kNfkc), "fix");
  // Hangul, arithmetically: LV + T composes; the syllable decomposes into its jamo.
  EXPECT_EQ(Normalize("\u1112\u1161\u11AB", NormalForm::kNfc), "\uD55C");
  EXPECT_EQ(Normalize("\uD55C", NormalForm::kNfd), "\u1112\u1161\u11AB");
  // ASCII around non-ASCII stretches is kept; a leading mark composes with the ASCII before it.
  EXPECT_EQ(Normalize("abc e\u0301 xyz", NormalForm::kNfc), "abc \u00E9 xyz");
}

TEST(UnicodeTest, NormalizationDataIsUnicode9) {
  // U+1DF6 got combining class 232 in Unicode 10.0; HF's data (9.0) treats it as an unassigned
  // starter, so it blocks U+0301 from the 'a' and nothing is reordered.
  EXPECT_EQ(Normalize("a\u1DF6\u0301", NormalForm::kNfc), "a\u1DF6\u0301");
  // U+0316 (class 220) sorts before U+0301 (230) and does not block it: 'a' + U+0301 composes.
  EXPECT_EQ(Normalize("a\u0301\u0316", NormalForm::kNfc), "\u00E1\u0316");
  EXPECT_EQ(Normalize("a\u0316\u0301", NormalForm::kNfc), "\u00E1\u0316");
}

}  // namespace
}  // namespace dpo::tok
