// Reading the ranks' own files (<output.dir>/ranks/rank-R.json) the way the coordinator must:
// bounded, never blocking, skipping whatever is not a rank file.
#include "coordinator/worker_status.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/util/path_util.h"
#include "common/util/scratch_dir_test_util.h"

namespace dpo {
namespace {

std::string RankJson(int rank, int64_t step) {
  return "{\"rank\": " + std::to_string(rank) + ", \"world_size\": 4, \"step\": " + std::to_string(step) +
         ", \"metrics\": {\"step_seconds\": 0.5, \"comm_hidden_ratio\": null, \"peak_memory_bytes\": 1024}}";
}

TEST(RankStatusTest, ParsesARankObjectAndDropsNulls) {
  const auto status = ParseRankStatus(RankJson(3, 9));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->rank, 3);
  EXPECT_EQ(status->step, 9);
  EXPECT_EQ(status->metrics.size(), 2u);  // comm_hidden_ratio was null
  EXPECT_EQ(status->metrics.at("step_seconds"), 0.5);
  EXPECT_EQ(status->metrics.at("peak_memory_bytes"), 1024.0);
}

TEST(RankStatusTest, RefusesWhatIsNotARankObject) {
  EXPECT_FALSE(ParseRankStatus("").has_value());
  EXPECT_FALSE(ParseRankStatus("[1, 2]").has_value());
  EXPECT_FALSE(ParseRankStatus(R"({"rank": 1})").has_value());                   // no metrics
  EXPECT_FALSE(ParseRankStatus(R"({"rank": "1", "metrics": {}})").has_value());  // not a number
  EXPECT_FALSE(ParseRankStatus(R"({"rank": -1, "metrics": {}})").has_value());   // negative
}

TEST(RankStatusTest, ReadsEveryRankFileSortedAndSkipsTheRest) {
  testing::ScratchDir dir("worker_status");
  EXPECT_TRUE(ReadRankStatuses(dir.path()).empty());  // no ranks/ folder yet
  const std::string ranks = JoinPath(dir.path(), "ranks");
  MakeDirectories(ranks);
  for (int rank : {2, 0, 1})
    std::ofstream(JoinPath(ranks, "rank-" + std::to_string(rank) + ".json")) << RankJson(rank, 5);
  // Not rank files, or not usable ones: another name, a rank that disagrees with its name, a
  // file past the size limit, a FIFO (which a blocking open would wait on forever), a link.
  std::ofstream(JoinPath(ranks, "notes.json")) << RankJson(4, 5);
  std::ofstream(JoinPath(ranks, "rank-5.json")) << RankJson(6, 5);
  std::ofstream(JoinPath(ranks, "rank-7.json")) << std::string(kMaxRankStatusBytes + 1, ' ') << RankJson(7, 5);
  ASSERT_EQ(::mkfifo(JoinPath(ranks, "rank-8.json").c_str(), 0600), 0);
  ASSERT_EQ(::symlink(JoinPath(ranks, "rank-0.json").c_str(), JoinPath(ranks, "rank-9.json").c_str()), 0);
  std::ofstream(JoinPath(ranks, "rank-x.json")) << RankJson(0, 5);
  const std::vector<RankStatus> read = ReadRankStatuses(dir.path());
  ASSERT_EQ(read.size(), 3u);
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_EQ(read[rank].rank, rank);
    EXPECT_EQ(read[rank].step, 5);
  }
}

TEST(RankStatusTest, ARanksFolderThatIsALinkIsNotFollowed) {
  testing::ScratchDir dir("worker_status");
  const std::string elsewhere = JoinPath(dir.path(), "elsewhere");
  MakeDirectories(elsewhere);
  std::ofstream(JoinPath(elsewhere, "rank-0.json")) << RankJson(0, 1);
  const std::string out = JoinPath(dir.path(), "out");
  MakeDirectories(out);
  ASSERT_EQ(::symlink(elsewhere.c_str(), JoinPath(out, "ranks").c_str()), 0);
  EXPECT_TRUE(ReadRankStatuses(out).empty());
}

}  // namespace
}  // namespace dpo
