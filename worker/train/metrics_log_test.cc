#include "worker/train/metrics_log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/util/error.h"
#include "common/util/path_util.h"

namespace dpo {
namespace {

std::vector<nlohmann::json> ReadLines(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(ReadWholeFile(path));
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

TEST(MetricsLogTest, OneJsonObjectPerLineAppendedAcrossRuns) {
  const std::string path = "/tmp/dpo_metrics_test_" + std::to_string(::getpid()) + ".jsonl";
  RemoveFileIfExists(path);
  {
    MetricsLog log(path, /*show_progress=*/false);
    log.Write(1, 0.25, "train", {{"loss", 0.6931}, {"rewards/accuracies", 0.5}});
    // JSON has no NaN: a non-finite value is null, and the line still parses.
    log.Write(2, 0.5, "eval", {{"eval_loss", std::nan("")}});
  }
  {
    MetricsLog resumed(path, false);  // a resumed run continues the same file
    resumed.Write(3, 0.75, "train", {{"loss", 0.5}});
  }
  const auto lines = ReadLines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["step"], 1);
  EXPECT_EQ(lines[0]["epoch"], 0.25);
  EXPECT_EQ(lines[0]["split"], "train");
  EXPECT_EQ(lines[0]["loss"], 0.6931);
  EXPECT_EQ(lines[0]["rewards/accuracies"], 0.5);
  EXPECT_TRUE(lines[1]["eval_loss"].is_null());
  EXPECT_EQ(lines[2]["step"], 3);
  RemoveFileIfExists(path);
}

TEST(MetricsLogTest, ProgressShowsStepLossAccuracyAndEta) {
  ::testing::internal::CaptureStderr();
  {
    MetricsLog log("", /*show_progress=*/true);
    log.Progress(3, 10, 0.693147, 0.5);
    log.Progress(4, 10, 0.5, 0.75);
  }
  const std::string shown = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(shown.find("3/10 loss 0.6931 acc 0.500 eta"), std::string::npos) << shown;
  EXPECT_NE(shown.find("4/10 loss 0.5000 acc 0.750 eta"), std::string::npos) << shown;
  EXPECT_NE(shown.find("[#######"), std::string::npos) << shown;  // 4/10 of 24 cells
  EXPECT_EQ(shown.back(), '\n');                                  // the line is ended when the log closes
}

TEST(MetricsLogTest, UnwritablePathIsNamed) {
  try {
    MetricsLog log("/nonexistent-dir/metrics.jsonl", false);
    FAIL() << "opened";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/metrics.jsonl"), std::string::npos);
  }
}

}  // namespace
}  // namespace dpo
