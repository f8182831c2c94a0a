#include "common/util/error.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace dpo {
namespace {

constexpr int kCodes = static_cast<int>(ErrorCode::kInterrupted) + 1;

TEST(ErrorCodeTest, EveryCodeHasItsOwnRowAndNameRoundTrips) {
  std::set<std::string> names;
  for (int i = 0; i < kCodes; ++i) {
    const auto code = static_cast<ErrorCode>(i);
    const ErrorCodeInfo& info = InfoOf(code);
    EXPECT_EQ(info.code, code) << i;
    EXPECT_TRUE(names.insert(info.name).second) << "duplicate name " << info.name;
    EXPECT_EQ(ErrorCodeFromName(info.name), code) << info.name;
    EXPECT_GT(info.grpc_code, 0) << info.name;  // 0 is OK: never a failure's status
    EXPECT_LE(info.grpc_code, 16) << info.name;
  }
  EXPECT_EQ(ErrorCodeFromName("no_such_code"), std::nullopt);
}

TEST(ErrorCodeTest, DeterministicFailuresAreNotRetriedAndMapToTheirGrpcCodes) {
  EXPECT_EQ(InfoOf(ErrorCode::kInvalidSpec).grpc_code, 3);  // INVALID_ARGUMENT
  EXPECT_EQ(InfoOf(ErrorCode::kBadData).grpc_code, 3);
  EXPECT_EQ(InfoOf(ErrorCode::kCollectiveTimeout).grpc_code, 4);  // DEADLINE_EXCEEDED
  EXPECT_EQ(InfoOf(ErrorCode::kInterrupted).grpc_code, 1);        // CANCELLED
  EXPECT_EQ(InfoOf(ErrorCode::kInternal).grpc_code, 13);          // INTERNAL
  for (ErrorCode code : {ErrorCode::kInvalidSpec, ErrorCode::kBadData, ErrorCode::kBadModel, ErrorCode::kNonFinite,
                         ErrorCode::kOutputLocked}) {
    EXPECT_FALSE(InfoOf(code).retryable) << InfoOf(code).name;
  }
  for (ErrorCode code :
       {ErrorCode::kCollectiveTimeout, ErrorCode::kLostRank, ErrorCode::kInterrupted, ErrorCode::kInternal}) {
    EXPECT_TRUE(InfoOf(code).retryable) << InfoOf(code).name;
  }
}

TEST(ErrorCodeTest, ExitStatusesAreDistinctForPreemptionAndTimeouts) {
  EXPECT_EQ(InfoOf(ErrorCode::kInterrupted).exit_code, 75);  // EX_TEMPFAIL
  EXPECT_EQ(InfoOf(ErrorCode::kCollectiveTimeout).exit_code, 76);
  EXPECT_EQ(InfoOf(ErrorCode::kBadData).exit_code, 1);
}

TEST(ErrorCodeTest, FailCarriesContextAndCodeDefaultingToInternal) {
  try {
    Fail("data.jsonl:3", "chosen: missing", ErrorCode::kBadData);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "data.jsonl:3: chosen: missing");
    EXPECT_EQ(e.code(), ErrorCode::kBadData);
  }
  EXPECT_EQ(Error("x").code(), ErrorCode::kInternal);
}

}  // namespace
}  // namespace dpo
