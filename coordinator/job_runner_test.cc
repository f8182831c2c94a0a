// JobRunner with real child processes: small shell scripts stand in for dpo-worker and
// dpo-prepare-job, so each outcome (exit status, signal, status.json) is chosen by the test.
// scripts/test.sh also runs these under ThreadSanitizer.
#include "coordinator/job_runner.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "common/util/path_util.h"
#include "common/util/scratch_dir_test_util.h"
#include "coordinator/job_service.h"

namespace dpo {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

class JobRunnerTest : public ::testing::Test {
 protected:
  JobRunnerTest() {
    options_.worker_binary = Script("worker.sh", "exit 0\n");
    options_.prepare_binary = Script("prepare.sh", "exit 0\n");
    options_.work_dir = JoinPath(dir_, "jobs");
    options_.poll = milliseconds(20);
    options_.retry_backoff = milliseconds(10);
    options_.stop_grace = milliseconds(2000);
  }

  // An executable /bin/sh script in the scratch folder.
  std::string Script(const std::string& name, const std::string& body) {
    std::string path = JoinPath(dir_, name);
    std::ofstream(path) << "#!/bin/sh\n" << body;
    ::chmod(path.c_str(), 0755);
    return path;
  }

  // A valid resolved spec writing to <scratch>/<name>; its text contains `name`.
  int64_t Submit(const std::string& name) {
    const char* source = std::getenv("DPO_SOURCE_DIR");
    const std::string examples = JoinPath(source ? source : ".", "examples");
    const std::string out = JoinPath(dir_, name);
    const std::string spec = "model:\n  random: {config: \"" + JoinPath(examples, "tiny-llama/config.json") +
                             "\", seed: 7}\n"
                             "tokenizer:\n  path: \"" +
                             JoinPath(examples, "tokenizer") +
                             "\"\n"
                             "data:\n  train: \"" +
                             JoinPath(examples, "data/hh_rlhf_sample.jsonl") +
                             "\"\n"
                             "train:\n  max_steps: 2\n"
                             "output:\n  dir: \"" +
                             out + "\"\n";
    MakeDirectories(out);
    return store_.Insert(name, spec, out).job.id;
  }

  JobRecord WaitFor(int64_t id, JobState state, milliseconds timeout = milliseconds(20000)) {
    const auto deadline = steady_clock::now() + timeout;
    JobRecord job = *store_.Get(id);
    while (job.state != state && steady_clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(10));
      job = *store_.Get(id);
    }
    EXPECT_EQ(ToString(job.state), ToString(state)) << "job " << id << ": " << job.error;
    return job;
  }

  testing::ScratchDir scratch_{"job_runner_test"};
  const std::string& dir_ = scratch_.path();
  JobStore store_{JoinPath(dir_, "jobs.db")};
  JobRunnerOptions options_;
};

TEST_F(JobRunnerTest, AStuckPreparationHoldsUpNoOtherJobNorTheShutdown) {
  // A preparation that never ends (as open() of a FIFO would not).
  options_.prepare_binary = Script("prepare.sh", "grep -q stuck \"$1\" && exec sleep 600\nexit 0\n");
  const int64_t stuck = Submit("stuck");
  const int64_t fine = Submit("fine");
  auto runner = std::make_unique<JobRunner>(store_, options_);
  WaitFor(fine, JobState::kSucceeded);
  EXPECT_EQ(store_.Get(stuck)->state, JobState::kQueued);
  EXPECT_FALSE(store_.Get(stuck)->data_prepared);
  const auto started = steady_clock::now();
  runner.reset();
  EXPECT_LT(steady_clock::now() - started, milliseconds(5000));
  EXPECT_EQ(store_.Get(stuck)->state, JobState::kQueued);  // the next coordinator prepares it
}

TEST_F(JobRunnerTest, APreparationPastItsTimeLimitFailsTheJob) {
  options_.prepare_binary = Script("prepare.sh", "exec sleep 600\n");
  options_.prepare_timeout = milliseconds(300);
  const int64_t id = Submit("slow");
  JobRunner runner(store_, options_);
  const JobRecord job = WaitFor(id, JobState::kFailed);
  EXPECT_EQ(job.error, "data preparation: timed out after 300 ms");
  EXPECT_EQ(job.attempts, 0);
}

TEST_F(JobRunnerTest, BadDataFailsInPreparationWithItsReason) {
  options_.prepare_binary = Script("prepare.sh", "echo 'noise'; echo 'data.jsonl:2: bad json' >&2; exit 1\n");
  const int64_t id = Submit("bad");
  JobRunner runner(store_, options_);
  EXPECT_EQ(WaitFor(id, JobState::kFailed).error, "data preparation: data.jsonl:2: bad json");
}

TEST_F(JobRunnerTest, AGroupKilledByASignalIsRetriedThenFails) {
  options_.worker_binary = Script("worker.sh", "kill -9 $$\n");
  options_.max_retries = 1;
  const int64_t id = Submit("killed");
  JobRunner runner(store_, options_);
  const JobRecord job = WaitFor(id, JobState::kFailed);
  EXPECT_EQ(job.attempts, 2);
  EXPECT_EQ(job.retries, 1);
  EXPECT_EQ(job.error, "killed by signal 9 (after 1 retries)");
  const auto attempts = store_.Attempts(id);
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[0].signal, 9);
  EXPECT_EQ(attempts[0].reason, "killed by signal 9; retry 1 of 1 in 10 ms");
  EXPECT_NE(attempts[0].launch_id, attempts[1].launch_id);
  EXPECT_GT(attempts[0].pgid, 0);
}

TEST_F(JobRunnerTest, StatusJsonDecidesRetryOrFailureAndItsReason) {
  // A deterministic failure is not retried; its reason is status.json's, not the log's.
  options_.worker_binary = Script("worker.sh",
                                  "out=$(sed -n 's/^  dir: \"\\(.*\\)\"$/\\1/p' \"$2\")\n"
                                  "echo 'the last log line' >&2\n"
                                  "echo '{\"state\": \"failed\", \"step\": 3, \"error_code\": \"non_finite\", "
                                  "\"reason\": \"training: 1 non-finite step\", \"rank\": 0}' > \"$out/status.json\"\n"
                                  "exit 1\n");
  const int64_t id = Submit("diverged");
  JobRunner runner(store_, options_);
  const JobRecord job = WaitFor(id, JobState::kFailed);
  EXPECT_EQ(job.error, "training: 1 non-finite step");
  EXPECT_EQ(job.attempts, 1);
  EXPECT_EQ(job.exit_code, 1);
  // The status outlives the run: kept in the store, it is the finished job's progress.
  const auto progress = runner.Progress(job);
  ASSERT_TRUE(progress.has_value());
  EXPECT_EQ(progress->step, 3);
  EXPECT_EQ(progress->error_code, "non_finite");
}

TEST_F(JobRunnerTest, AnInterruptedGroupIsRequeuedAndResumes) {
  // Exit 75 the first time (checkpointed on SIGTERM), success the second.
  const std::string marker = JoinPath(dir_, "ran-once");
  options_.worker_binary = Script("worker.sh", "[ -e " + marker + " ] && exit 0\ntouch " + marker + "\nexit 75\n");
  options_.retry_backoff = milliseconds(600000);  // an interruption is no retry: no backoff
  const int64_t id = Submit("preempted");
  JobRunner runner(store_, options_);
  const JobRecord job = WaitFor(id, JobState::kSucceeded);
  EXPECT_EQ(job.attempts, 2);
  EXPECT_EQ(job.retries, 0);
  const auto attempts = store_.Attempts(id);
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[0].exit_code, 75);
  EXPECT_EQ(attempts[0].reason, "interrupted: checkpointed on SIGTERM");
  std::ifstream spec(JoinPath(JoinPath(options_.work_dir, "job-" + std::to_string(id)), "job.yaml"));
  const std::string text((std::istreambuf_iterator<char>(spec)), {});
  EXPECT_NE(text.find("resume_from_checkpoint: \"latest\""), std::string::npos) << text;
}

TEST_F(JobRunnerTest, ACancelRightAfterLaunchStopsTheGroup) {
  options_.worker_binary = Script("worker.sh", "exec sleep 600\n");
  options_.slots = 3;
  JobRunner runner(store_, options_);
  std::vector<int64_t> ids;
  ids.reserve(3);
  for (int i = 0; i < 3; ++i) ids.push_back(Submit("long" + std::to_string(i)));
  runner.Wake();
  for (int64_t id : ids) {
    // Cancel as soon as the job is RUNNING: maybe before its process group is recorded.
    while (store_.Get(id)->state != JobState::kRunning) std::this_thread::sleep_for(milliseconds(1));
    if (!store_.RequestCancel(id)) runner.Stop(id);
  }
  for (int64_t id : ids) {
    const JobRecord job = WaitFor(id, JobState::kCancelled);
    EXPECT_EQ(job.exit_code, 128 + SIGTERM);
  }
}

TEST_F(JobRunnerTest, AGroupOfAPreviousCoordinatorIsAdoptedNotRelaunched) {
  const int64_t id = Submit("adopted");
  const std::string out = JoinPath(dir_, "adopted");
  ASSERT_TRUE(store_.MarkPrepared(id));
  ASSERT_TRUE(store_.MarkRunning(id, "launch-from-before"));
  // A group started by the coordinator that died: its own session, the launch id in its
  // environment; it succeeds a little after the new runner has started.
  const std::string go = JoinPath(dir_, "go"), ready = JoinPath(dir_, "ready");
  ASSERT_EQ(
      std::system(("DPO_LAUNCH_ID=launch-from-before setsid sh -c 'touch " + ready + "; while [ ! -e " + go +
                   " ]; do sleep 0.05; done; echo \"{\\\"state\\\": \\\"succeeded\\\"}\" > " + out + "/status.json' &")
                      .c_str()),
      0);
  while (!std::ifstream(ready).good()) std::this_thread::sleep_for(milliseconds(10));
  options_.worker_binary = Script("worker.sh", "echo relaunched >> " + JoinPath(dir_, "relaunched") + "\n");
  JobRunner runner(store_, options_);
  EXPECT_EQ(store_.Get(id)->state, JobState::kRunning);  // adopted: still running
  std::ofstream(go) << "";
  const JobRecord job = WaitFor(id, JobState::kSucceeded);
  EXPECT_EQ(job.attempts, 1);
  EXPECT_FALSE(std::ifstream(JoinPath(dir_, "relaunched")).good());
}

TEST_F(JobRunnerTest, AJobThatEndedWhileNoCoordinatorRanIsSettledFromItsStatus) {
  const int64_t done = Submit("done");
  const int64_t lost = Submit("lost");
  for (int64_t id : {done, lost}) {
    ASSERT_TRUE(store_.MarkPrepared(id));
    ASSERT_TRUE(store_.MarkRunning(id, "gone-" + std::to_string(id)));
  }
  std::ofstream(JoinPath(JoinPath(dir_, "done"), "status.json")) << R"({"state": "succeeded", "step": 2})";
  options_.worker_binary = Script("worker.sh", "exec sleep 600\n");
  options_.retry_backoff = milliseconds(600000);
  JobRunner runner(store_, options_);
  EXPECT_EQ(store_.Get(done)->state, JobState::kSucceeded);
  EXPECT_EQ(store_.Get(done)->attempts, 1);
  // No status and no group: it died unwatched; a retry, after the backoff.
  const JobRecord job = *store_.Get(lost);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.retries, 1);
  EXPECT_EQ(store_.Attempts(lost)[0].reason.rfind("the worker group ended without a final status", 0), 0u);
}

TEST_F(JobRunnerTest, EachRanksFileIsServedLabelledByRankWhileTheGroupRuns) {
  options_.rank_poll = milliseconds(20);
  // Two ranks' files, as dpo-worker's ranks write them, plus a key /metrics must not serve.
  options_.worker_binary =
      Script("worker.sh",
             "out=$(sed -n 's/^  dir: \"\\(.*\\)\"$/\\1/p' \"$2\")\n"
             "mkdir -p \"$out/ranks\"\n"
             "for r in 1 0; do echo '{\"rank\": '$r', \"world_size\": 2, \"step\": 4, \"metrics\": "
             "{\"step_seconds\": 0.5, \"comm_hidden_ratio\": 0.25, \"skipped_steps_total\": 1, "
             "\"made_up\": 7}}' > \"$out/ranks/rank-$r.json\"; done\n"
             "exec sleep 600\n");
  const int64_t id = Submit("ranks");
  JobRunner runner(store_, options_);
  WaitFor(id, JobState::kRunning);
  std::vector<RankStatus> ranks;
  const auto deadline = steady_clock::now() + milliseconds(20000);
  while (ranks.size() < 2 && steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
    ranks = runner.RankProgress(id);
  }
  ASSERT_EQ(ranks.size(), 2u);
  EXPECT_EQ(ranks[0].rank, 0);
  EXPECT_EQ(ranks[1].rank, 1);
  EXPECT_EQ(ranks[1].step, 4);
  EXPECT_EQ(ranks[1].metrics.at("comm_hidden_ratio"), 0.25);
  const std::string text = RenderJobMetrics(store_, runner);
  for (const char* rank : {"0", "1"}) {
    const std::string labels = "{job_id=\"" + std::to_string(id) + "\",name=\"ranks\",rank=\"" + rank + "\"}";
    EXPECT_NE(text.find("\ndpo_rank_comm_hidden_ratio" + labels + " 0.25\n"), std::string::npos) << text;
    EXPECT_NE(text.find("\ndpo_rank_step_seconds" + labels + " 0.5\n"), std::string::npos) << text;
    EXPECT_NE(text.find("\ndpo_rank_global_step" + labels + " 4\n"), std::string::npos) << text;
    EXPECT_NE(text.find("\ndpo_rank_skipped_steps_total" + labels + " 1\n"), std::string::npos) << text;
  }
  EXPECT_NE(text.find("\n# TYPE dpo_rank_skipped_steps_total counter\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\n# TYPE dpo_rank_step_seconds gauge\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("made_up"), std::string::npos) << text;  // only the documented keys
  if (!store_.RequestCancel(id)) runner.Stop(id);
  WaitFor(id, JobState::kCancelled);
  EXPECT_TRUE(runner.RankProgress(id).empty());
  EXPECT_EQ(RenderJobMetrics(store_, runner).find("dpo_rank_"), std::string::npos);
}

}  // namespace
}  // namespace dpo
