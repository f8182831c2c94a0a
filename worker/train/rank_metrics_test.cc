#include "worker/train/rank_metrics.h"

#include <gtest/gtest.h>

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/util/path_util.h"
#include "common/util/scratch_dir_test_util.h"

namespace dpo {
namespace {

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

RankMetrics Sample() {
  RankMetrics m;
  m.step = 12;
  m.step_seconds = 0.25;
  m.tokens_per_second = 4096;
  m.comm_seconds = 0.05;
  m.comm_hidden_ratio = 0.8;
  m.peak_memory_bytes = int64_t{3} << 30;
  m.skipped_steps = 2;
  return m;
}

TEST(RankMetricsTest, WritesTheDocumentedFieldsExactly) {
  const nlohmann::json j = nlohmann::json::parse(RankMetricsJson(1, 4, Sample()));
  EXPECT_EQ(j.size(), 4u);
  EXPECT_EQ(j["rank"], 1);
  EXPECT_EQ(j["world_size"], 4);
  EXPECT_EQ(j["step"], 12);
  const nlohmann::json& m = j["metrics"];
  EXPECT_EQ(m.size(), 6u);
  EXPECT_EQ(m["step_seconds"], 0.25);
  EXPECT_EQ(m["tokens_per_second"], 4096.0);
  EXPECT_EQ(m["comm_seconds"], 0.05);
  EXPECT_EQ(m["comm_hidden_ratio"], 0.8);
  EXPECT_EQ(m["peak_memory_bytes"], int64_t{3} << 30);
  EXPECT_EQ(m["skipped_steps_total"], 2);
}

TEST(RankMetricsTest, NoHiddenRatioWithoutCommunicationAndNullForNonFinite) {
  RankMetrics m = Sample();
  m.comm_hidden_ratio.reset();
  m.comm_seconds = 0;
  m.step_seconds = std::numeric_limits<double>::quiet_NaN();
  const nlohmann::json j = nlohmann::json::parse(RankMetricsJson(0, 1, m));
  EXPECT_FALSE(j["metrics"].contains("comm_hidden_ratio"));
  EXPECT_EQ(j["metrics"]["comm_seconds"], 0.0);
  EXPECT_TRUE(j["metrics"]["step_seconds"].is_null());  // JSON has no NaN
}

TEST(RankMetricsTest, EachRankWritesItsOwnFileAndRewritesIt) {
  testing::ScratchDir dir("rank_metrics");
  RankMetricsFile rank0(dir.path(), 0, 2), rank1(dir.path(), 1, 2);
  rank0.Write(Sample());
  RankMetrics later = Sample();
  later.step = 13;
  rank1.Write(Sample());
  rank1.Write(later);
  EXPECT_EQ(RankMetricsPath(dir.path(), 1), dir.path() + "/ranks/rank-1.json");
  EXPECT_EQ(ReadJson(RankMetricsPath(dir.path(), 0))["step"], 12);
  const nlohmann::json one = ReadJson(RankMetricsPath(dir.path(), 1));
  EXPECT_EQ(one["rank"], 1);
  EXPECT_EQ(one["step"], 13);
}

TEST(RankMetricsTest, RemoveTakesOnlyRankFilesAndToleratesNoDirectory) {
  testing::ScratchDir dir("rank_metrics");
  EXPECT_EQ(RemoveRankMetrics(dir.path()), 0);  // no ranks/ yet
  for (int rank : {0, 1, 7}) RankMetricsFile(dir.path(), rank, 8).Write(Sample());
  const std::string kept = JoinPath(JoinPath(dir.path(), "ranks"), "rank-notes.json");
  std::ofstream(kept) << "{}";
  EXPECT_EQ(RemoveRankMetrics(dir.path()), 3);
  EXPECT_FALSE(PathExists(RankMetricsPath(dir.path(), 7)));
  EXPECT_TRUE(PathExists(kept));
}

}  // namespace
}  // namespace dpo
