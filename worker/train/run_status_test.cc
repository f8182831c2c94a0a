#include "worker/train/run_status.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/util/error.h"
#include "common/util/path_util.h"
#include "common/util/scratch_dir_test_util.h"
#include "worker/train/checkpoint.h"
#include "worker/train/output_lock.h"

namespace dpo {
namespace {

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(RunStatusTest, WritesTheDocumentedFieldsExactly) {
  RunStatus status;
  status.state = RunState::kFailed;
  status.step = 3;
  status.total_steps = 10;
  status.metrics = {{"loss", 0.5}, {"grad_norm", std::numeric_limits<double>::infinity()}};
  status.error_code = ErrorCode::kBadData;
  status.reason = "data.jsonl:4: rejected: missing";
  status.rank = 1;
  const nlohmann::json j = nlohmann::json::parse(RunStatusJson(status));
  EXPECT_EQ(j.size(), 7u);
  EXPECT_EQ(j["state"], "failed");
  EXPECT_EQ(j["step"], 3);
  EXPECT_EQ(j["total_steps"], 10);
  EXPECT_EQ(j["metrics"]["loss"], 0.5);
  EXPECT_TRUE(j["metrics"]["grad_norm"].is_null());  // JSON has no inf
  EXPECT_EQ(j["error_code"], "bad_data");
  EXPECT_EQ(j["reason"], "data.jsonl:4: rejected: missing");
  EXPECT_EQ(j["rank"], 1);

  const nlohmann::json running = nlohmann::json::parse(RunStatusJson(RunStatus{}));
  EXPECT_EQ(running["state"], "running");
  EXPECT_TRUE(running["error_code"].is_null());
  EXPECT_TRUE(running["rank"].is_null());
  EXPECT_TRUE(running["metrics"].is_object() && running["metrics"].empty());
}

TEST(RunStatusTest, OnlyRankZeroWritesProgressAnyRankWritesItsFailure) {
  testing::ScratchDir dir("run_status");
  const std::string path = JoinPath(dir.path(), "status.json");
  RunStatusFile rank1(dir.path(), 1);
  rank1.Progress(2, 5, {{"loss", 0.7}});
  EXPECT_FALSE(PathExists(path));
  RunStatusFile rank0(dir.path(), 0);
  rank0.Progress(2, 5, {{"loss", 0.7}});
  EXPECT_EQ(ReadJson(path)["state"], "running");
  rank1.Finish(RunState::kFailed, ErrorCode::kIo, "disk full", 1);
  const nlohmann::json j = ReadJson(path);
  EXPECT_EQ(j["state"], "failed");
  EXPECT_EQ(j["step"], 2);  // the failing rank's own progress
  EXPECT_EQ(j["metrics"]["loss"], 0.7);
  EXPECT_EQ(j["rank"], 1);
}

TEST(OutputDirLockTest, ASecondHolderFailsNamingTheDirectoryAndThePid) {
  testing::ScratchDir dir("output_lock");
  {
    OutputDirLock first(dir.path());
    try {
      OutputDirLock second(dir.path());  // another open file description: flock conflicts
      FAIL() << "expected the second lock to fail";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kOutputLocked);
      const std::string what = e.what();
      EXPECT_NE(what.find(dir.path()), std::string::npos) << what;
      EXPECT_NE(what.find("pid " + std::to_string(::getpid())), std::string::npos) << what;
    }
  }
  OutputDirLock again(dir.path());  // released with the first one's descriptor
}

TEST(CheckpointTempsTest, RemovesOnlyUnfinishedSaves) {
  testing::ScratchDir dir("checkpoint_temps");
  MakeDirectories(JoinPath(dir.path(), ".tmp-checkpoint-4-123/model"));
  MakeDirectories(JoinPath(dir.path(), ".tmp-checkpoint-8-77"));
  MakeDirectories(JoinPath(dir.path(), "checkpoint-4"));
  EXPECT_EQ(RemoveCheckpointTemps(dir.path()), 2);
  EXPECT_FALSE(PathExists(JoinPath(dir.path(), ".tmp-checkpoint-4-123")));
  EXPECT_FALSE(PathExists(JoinPath(dir.path(), ".tmp-checkpoint-8-77")));
  EXPECT_TRUE(PathExists(JoinPath(dir.path(), "checkpoint-4")));
}

}  // namespace
}  // namespace dpo
