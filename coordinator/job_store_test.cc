#include "coordinator/job_store.h"

#include <gtest/gtest.h>

#include "common/model/path_util.h"
#include "common/model/scratch_dir_test_util.h"
#include "common/util/error.h"

namespace dpo {
namespace {

class JobStoreTest : public ::testing::Test {
 protected:
  testing::ScratchDir scratch_{"job_store_test"};
  const std::string& dir_ = scratch_.path();
  const std::string path_ = JoinPath(dir_, "jobs.db");
};

TEST_F(JobStoreTest, JobsSurviveReopeningTheDatabase) {
  int64_t first = 0;
  {
    JobStore store(path_);
    const JobRecord a = store.Insert("a", "spec: a\n", "/out/a").job;
    first = a.id;
    EXPECT_EQ(a.state, JobState::kQueued);
    EXPECT_GT(a.submitted_unix_ms, 0);
    store.Insert("b", "spec: b\n", "/out/b");
  }
  JobStore reopened(path_);
  const auto jobs = reopened.List();
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].name, "b");  // newest first
  EXPECT_EQ(jobs[1].id, first);
  EXPECT_EQ(jobs[1].spec_yaml, "spec: a\n");
  EXPECT_EQ(jobs[1].output_dir, "/out/a");
  EXPECT_EQ(reopened.List(1).size(), 1u);
  EXPECT_EQ(reopened.List(0, JobState::kQueued).size(), 2u);
  EXPECT_TRUE(reopened.List(0, JobState::kRunning).empty());
  EXPECT_FALSE(reopened.Get(first + 100).has_value());
}

TEST_F(JobStoreTest, AnOutputDirectoryTakesOneActiveJob) {
  JobStore store(path_);
  const JobStore::InsertResult first = store.Insert("a", "x", "/out");
  ASSERT_TRUE(first.inserted);
  const JobStore::InsertResult clash = store.Insert("b", "x", "/out");
  EXPECT_FALSE(clash.inserted);
  EXPECT_EQ(clash.job.id, first.job.id);
  EXPECT_EQ(store.List().size(), 1u);
  store.RequestCancel(first.job.id);  // finished: the directory is free again
  EXPECT_TRUE(store.Insert("c", "x", "/out").inserted);
}

TEST_F(JobStoreTest, LifecycleQueuedRunningFinished) {
  JobStore store(path_);
  const int64_t a = store.Insert("a", "x", "/a").job.id;
  const int64_t b = store.Insert("b", "x", "/b").job.id;
  // Only prepared jobs launch: first both wait for preparation, oldest first.
  EXPECT_FALSE(store.NextQueued().has_value());
  ASSERT_TRUE(store.NextToPrepare().has_value());
  EXPECT_EQ(store.NextToPrepare()->id, a);
  EXPECT_TRUE(store.MarkPrepared(b));
  EXPECT_EQ(store.NextToPrepare()->id, a);
  ASSERT_TRUE(store.NextQueued().has_value());
  EXPECT_EQ(store.NextQueued()->id, b);
  EXPECT_TRUE(store.MarkPrepared(a));
  EXPECT_FALSE(store.NextToPrepare().has_value());
  EXPECT_EQ(store.NextQueued()->id, a);  // oldest first
  EXPECT_TRUE(store.MarkRunning(a));
  EXPECT_FALSE(store.MarkRunning(a));  // no longer queued
  EXPECT_FALSE(store.MarkPrepared(a));
  EXPECT_EQ(store.NextQueued()->id, b);
  store.MarkFinished(a, JobState::kFailed, 1, "training: 3 consecutive steps with a non-finite loss");
  const JobRecord done = *store.Get(a);
  EXPECT_EQ(done.state, JobState::kFailed);
  EXPECT_EQ(done.exit_code, 1);
  EXPECT_EQ(done.attempts, 1);
  EXPECT_EQ(done.error, "training: 3 consecutive steps with a non-finite loss");
  EXPECT_GE(done.finished_unix_ms, done.started_unix_ms);
  EXPECT_TRUE(done.data_prepared);
  store.MarkFinished(a, JobState::kSucceeded, 0, "");  // a finished job stays as it is
  EXPECT_EQ(store.Get(a)->state, JobState::kFailed);
  const auto counts = store.CountByState();
  ASSERT_EQ(counts.size(), 5u);
  for (const auto& [state, n] : counts) {
    EXPECT_EQ(n, state == JobState::kQueued || state == JobState::kFailed ? 1 : 0) << ToString(state);
  }
}

TEST_F(JobStoreTest, CancelQueuedAtOnceRunningOnRequestFinishedNever) {
  JobStore store(path_);
  const int64_t queued = store.Insert("q", "x", "/q").job.id;
  const int64_t running = store.Insert("r", "x", "/r").job.id;
  store.MarkRunning(running);
  EXPECT_TRUE(store.RequestCancel(queued));
  EXPECT_EQ(store.Get(queued)->state, JobState::kCancelled);
  EXPECT_FALSE(store.RequestCancel(running));  // the runner must stop it
  EXPECT_EQ(store.Get(running)->state, JobState::kRunning);
  EXPECT_TRUE(store.Get(running)->cancel_requested);
  EXPECT_THROW(store.RequestCancel(queued), Error);  // already cancelled
  EXPECT_THROW(store.RequestCancel(999), Error);
}

TEST_F(JobStoreTest, RestartRequeuesInterruptedJobsButNotCancelledOnes) {
  int64_t interrupted = 0, cancelling = 0;
  {
    JobStore store(path_);
    interrupted = store.Insert("i", "x", "/i").job.id;
    cancelling = store.Insert("c", "x", "/c").job.id;
    store.MarkRunning(interrupted);
    store.MarkRunning(cancelling);
    store.RequestCancel(cancelling);
  }  // the coordinator stops with both running
  JobStore store(path_);
  EXPECT_EQ(store.RequeueInterrupted(), 1);
  EXPECT_EQ(store.Get(interrupted)->state, JobState::kQueued);
  EXPECT_EQ(store.Get(cancelling)->state, JobState::kCancelled);
  EXPECT_TRUE(store.MarkRunning(interrupted));
  EXPECT_EQ(store.Get(interrupted)->attempts, 2);
}

TEST_F(JobStoreTest, UnopenableDatabaseIsNamed) {
  try {
    JobStore store(JoinPath(JoinPath(dir_, "missing-dir"), "jobs.db"));
    FAIL() << "opened";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing-dir/jobs.db"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dpo
