#include "common/config/suggest.h"

#include <gtest/gtest.h>

namespace dpo {
namespace {

TEST(SuggestTest, EditDistanceCountsTranspositionsOnce) {
  EXPECT_EQ(EditDistance("", ""), 0u);
  EXPECT_EQ(EditDistance("beta", ""), 4u);
  EXPECT_EQ(EditDistance("beta", "beta"), 0u);
  EXPECT_EQ(EditDistance("betta", "beta"), 1u);  // insertion
  EXPECT_EQ(EditDistance("btea", "beta"), 1u);   // adjacent transposition
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
  EXPECT_EQ(EditDistance("ca", "abc"), 3u);  // OSA, not full Damerau (which gives 2)
}

TEST(SuggestTest, ClosestMatchStaysWithinTheTypoBudget) {
  const std::vector<std::string> names = {"sigmoid", "sigmoid_norm", "hinge", "ipo"};
  EXPECT_EQ(ClosestMatch("sigmoidd", names), "sigmoid");
  EXPECT_EQ(ClosestMatch("hnige", names), "hinge");
  EXPECT_EQ(ClosestMatch("ipo", names), "ipo");
  EXPECT_EQ(ClosestMatch("dpo", names), "ipo");         // 1 edit on a 3-letter word
  EXPECT_EQ(ClosestMatch("kto", names), std::nullopt);  // 2 edits: too far for 3 letters
  EXPECT_EQ(ClosestMatch("completely_different", names), std::nullopt);
}

}  // namespace
}  // namespace dpo
