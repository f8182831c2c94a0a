// The collective watchdog on its own (no MPI): a wait past the timeout ends the process with
// collective_timeout's exit status, reporting first and naming the rank whose heartbeat is stale.
#include "worker/comm/collective_watchdog.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/util/path_util.h"

namespace dpo {
namespace {

namespace fs = std::filesystem;

class CollectiveWatchdogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    dir_ = fs::temp_directory_path() / ("dpo_watchdog_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { RemoveTree(dir_.string()); }  // not fs::remove_all: see path_util.h
  // A heartbeat of `rank` written `age_ms` ago, as CollectiveWatchdog writes them.
  void WriteHeartbeat(int rank, int64_t entered, int64_t age_ms) {
    const int64_t now =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    std::ofstream(dir_ / (".heartbeat-rank-" + std::to_string(rank))) << entered << ' ' << now - age_ms << '\n';
  }
  CollectiveTimeoutOptions Options(double seconds) {
    CollectiveTimeoutOptions options;
    options.seconds = seconds;
    options.heartbeat_dir = dir_.string();
    options.on_failure = [](ErrorCode code, const std::string& reason, int suspect) {
      std::fprintf(stderr, "reported %s rank %d: %s\n", InfoOf(code).name, suspect, reason.c_str());
    };
    return options;
  }
  fs::path dir_;
};

TEST_F(CollectiveWatchdogTest, WaitsWithinTheTimeoutPass) {
  CollectiveWatchdog watchdog(0, 2, Options(2.0));
  for (int i = 0; i < 3; ++i) {
    const auto watch = watchdog.Start("test op");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  // The watchdog's own heartbeat counts the collectives this rank entered.
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  std::ifstream heartbeat(dir_ / ".heartbeat-rank-0");
  int64_t entered = 0;
  ASSERT_TRUE(heartbeat >> entered);
  EXPECT_EQ(entered, 3);
}

TEST_F(CollectiveWatchdogTest, ATimeoutNamesTheRankWithAStaleHeartbeatAndExits76) {
  WriteHeartbeat(1, 5, /*age_ms=*/60000);  // stopped a minute ago
  WriteHeartbeat(2, 2, /*age_ms=*/0);      // alive, behind: not the one to blame
  EXPECT_EXIT(
      {
        CollectiveWatchdog watchdog(0, 3, Options(0.5));
        const auto watch = watchdog.Start("test op");
        std::this_thread::sleep_for(std::chrono::seconds(5));
      },
      ::testing::ExitedWithCode(76),
      "reported collective_timeout rank 1: rank 0 waited 0.[5-9] s in test op.*rank 1 stopped responding");
}

TEST_F(CollectiveWatchdogTest, WithoutStaleHeartbeatsTheRankBehindIsNamed) {
  WriteHeartbeat(1, 0, /*age_ms=*/0);
  EXPECT_EXIT(
      {
        CollectiveWatchdog watchdog(0, 2, Options(0.5));
        for (int i = 0; i < 4; ++i) watchdog.Start("earlier op");
        const auto watch = watchdog.Start("test op");
        std::this_thread::sleep_for(std::chrono::seconds(5));
      },
      ::testing::ExitedWithCode(76), "reported collective_timeout rank 1: .*rank 1 is alive but behind");
}

TEST_F(CollectiveWatchdogTest, ABackendErrorEndsTheRunAsALostRank) {
  EXPECT_EXIT(
      {
        CollectiveWatchdog watchdog(0, 2, Options(100.0),
                                    {.async_error = [] { return std::string("peer gone"); }, .abort = {}});
        std::this_thread::sleep_for(std::chrono::seconds(5));
      },
      ::testing::ExitedWithCode(1), "reported lost_rank rank -1: rank 0: peer gone");
}

TEST_F(CollectiveWatchdogTest, ACollectiveInFlightUntilItsEventCompletesIsWatchedToo) {
  EXPECT_EXIT(
      {
        CollectiveWatchdog watchdog(0, 2, Options(0.5));
        watchdog.StartUntil("queued op", [] { return false; });  // never completes
        std::this_thread::sleep_for(std::chrono::seconds(5));
      },
      ::testing::ExitedWithCode(76), "waited .* in queued op");
}

TEST_F(CollectiveWatchdogTest, OneRankOrNoTimeoutStartsNoThread) {
  CollectiveWatchdog single(0, 1, Options(0.1));
  const auto watch = single.Start("test op");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_FALSE(fs::exists(dir_ / ".heartbeat-rank-0"));
}

}  // namespace
}  // namespace dpo
