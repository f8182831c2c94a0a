#include "coordinator/request_guard.h"

#include <gtest/gtest.h>

namespace dpo {
namespace {

TEST(RequestGuard, FindsTheFirstInvalidUtf8Byte) {
  EXPECT_EQ(FirstInvalidUtf8("plain ascii, caf\xC3\xA9, \xF0\x9F\x98\x80"), std::nullopt);
  EXPECT_EQ(FirstInvalidUtf8("ab\xFF"), 2u);
  EXPECT_EQ(FirstInvalidUtf8("a\xC0\xAF"), 1u);         // overlong "/"
  EXPECT_EQ(FirstInvalidUtf8("\xED\xA0\x80"), 0u);      // a surrogate
  EXPECT_EQ(FirstInvalidUtf8("\xF4\x90\x80\x80"), 0u);  // past U+10FFFF
  EXPECT_EQ(FirstInvalidUtf8("ok\xE2\x82"), 2u);        // cut short
}

TEST(RequestGuard, ReplyTextIsValidAndBounded) {
  EXPECT_EQ(ReplyText("a\xFF"
                      "b",
                      100),
            "a\xEF\xBF\xBD"
            "b");
  const std::string cut = ReplyText("\xC3\xA9\xC3\xA9\xC3\xA9", 5);  // never splits a character
  EXPECT_EQ(cut, "\xC3\xA9\xC3\xA9\xE2\x80\xA6");
  EXPECT_EQ(FirstInvalidUtf8(cut), std::nullopt);
  EXPECT_EQ(ReplyText(std::string(10000, 'x'), 1024).size(), 1024u + 3);
}

TEST(RequestGuard, RateLimiterAllowsABurstThenRefusesPerUser) {
  RateLimiter limiter(5);  // bursts of 10
  int allowed = 0;
  for (int i = 0; i < 30; ++i) allowed += limiter.Allow("alice");
  EXPECT_GE(allowed, 10);
  EXPECT_LE(allowed, 11);
  EXPECT_TRUE(limiter.Allow("bob"));  // a bucket per user
  RateLimiter unlimited(0);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(unlimited.Allow("alice"));
}

}  // namespace
}  // namespace dpo
