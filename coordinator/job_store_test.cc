#include "coordinator/job_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "common/util/error.h"
#include "common/util/path_util.h"
#include "common/util/scratch_dir_test_util.h"

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
  EXPECT_TRUE(store.MarkRunning(a, "launch-a"));
  EXPECT_FALSE(store.MarkRunning(a, "launch-a"));  // no longer queued
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
  store.MarkRunning(running, "launch-running");
  EXPECT_TRUE(store.RequestCancel(queued));
  EXPECT_EQ(store.Get(queued)->state, JobState::kCancelled);
  EXPECT_FALSE(store.RequestCancel(running));  // the runner must stop it
  EXPECT_EQ(store.Get(running)->state, JobState::kRunning);
  EXPECT_TRUE(store.Get(running)->cancel_requested);
  EXPECT_THROW(store.RequestCancel(queued), Error);  // already cancelled
  EXPECT_THROW(store.RequestCancel(999), Error);
}

TEST_F(JobStoreTest, AttemptsAreRecordedAndRequeueLetsCancelWin) {
  JobStore store(path_);
  const int64_t a = store.Insert("a", "x", "/a").job.id;
  const int64_t b = store.Insert("b", "x", "/b").job.id;
  store.MarkPrepared(a);
  store.MarkPrepared(b);
  ASSERT_TRUE(store.MarkRunning(a, "first"));
  EXPECT_FALSE(store.RecordLaunch(a, "first", 4242));  // no cancel requested
  EXPECT_EQ(store.Get(a)->pgid, 4242);
  EXPECT_EQ(store.Get(a)->launch_id, "first");
  AttemptRecord killed;
  killed.exit_code = 137;
  killed.signal = 9;
  killed.reason = "killed by signal 9";
  const int64_t later = store.Get(a)->started_unix_ms + 3'600'000;
  EXPECT_EQ(store.Requeue(a, killed, /*retry=*/true, later), JobState::kQueued);
  EXPECT_EQ(store.Get(a)->retries, 1);
  EXPECT_EQ(store.Get(a)->pgid, 0);
  EXPECT_EQ(store.NextQueued()->id, b);  // a waits for its backoff
  ASSERT_TRUE(store.MarkRunning(b, "b1"));
  EXPECT_FALSE(store.NextQueued().has_value());
  // A cancel while the group starts is seen when its process group is recorded.
  EXPECT_FALSE(store.RequestCancel(b));
  EXPECT_TRUE(store.RecordLaunch(b, "b1", 77));
  AttemptRecord interrupted;
  interrupted.exit_code = 75;
  interrupted.reason = "interrupted";
  EXPECT_EQ(store.Requeue(b, interrupted, /*retry=*/false, 0), JobState::kCancelled);
  EXPECT_EQ(store.Get(b)->state, JobState::kCancelled);

  const auto attempts = store.Attempts(a);
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].number, 1);
  EXPECT_EQ(attempts[0].launch_id, "first");
  EXPECT_EQ(attempts[0].pgid, 4242);
  EXPECT_EQ(attempts[0].signal, 9);
  EXPECT_EQ(attempts[0].exit_code, 137);
  EXPECT_EQ(attempts[0].reason, "killed by signal 9");
  EXPECT_GT(attempts[0].finished_unix_ms, 0);
  const auto b_attempts = store.Attempts(b);
  ASSERT_EQ(b_attempts.size(), 1u);
  EXPECT_EQ(b_attempts[0].reason, "interrupted");
  EXPECT_EQ(b_attempts[0].pgid, 77);
}

TEST_F(JobStoreTest, FinishingClosesTheOpenAttempt) {
  JobStore store(path_);
  const int64_t a = store.Insert("a", "x", "/a").job.id;
  store.MarkRunning(a, "one");
  store.MarkFinished(a, JobState::kFailed, 1, "training: non-finite loss");
  const auto attempts = store.Attempts(a);
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].exit_code, 1);
  EXPECT_EQ(attempts[0].reason, "training: non-finite loss");
  EXPECT_GE(attempts[0].finished_unix_ms, attempts[0].started_unix_ms);
}

TEST_F(JobStoreTest, PreparersSkipJobsOthersArePreparing) {
  JobStore store(path_);
  const int64_t a = store.Insert("a", "x", "/a").job.id;
  const int64_t b = store.Insert("b", "x", "/b").job.id;
  EXPECT_EQ(store.NextToPrepare({a})->id, b);
  EXPECT_FALSE(store.NextToPrepare({a, b}).has_value());
}

TEST_F(JobStoreTest, ASecondStoreOnTheSameFileIsRefused) {
  JobStore store(path_);
  try {
    JobStore second(path_);
    FAIL() << "opened twice";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in use by another dpo-coordinator"), std::string::npos) << e.what();
  }
}

// A database as the first coordinator made it: today's schema at user_version 0.
void MakeVersionZeroDatabase(const std::string& path) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const char* sql =
      "CREATE TABLE jobs ("
      " id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, state TEXT NOT NULL,"
      " spec_yaml TEXT NOT NULL, output_dir TEXT NOT NULL, submitted_ms INTEGER NOT NULL,"
      " started_ms INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER NOT NULL DEFAULT 0,"
      " exit_code INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',"
      " attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,"
      " data_prepared INTEGER NOT NULL DEFAULT 0);"
      "INSERT INTO jobs (name, state, spec_yaml, output_dir, submitted_ms, exit_code, error, attempts,"
      " data_prepared) VALUES ('old', 'failed', 'spec: old', '/out/old', 1000, 1, 'it broke', 1, 1);"
      "INSERT INTO jobs (name, state, spec_yaml, output_dir, submitted_ms, data_prepared)"
      " VALUES ('waiting', 'queued', 'spec: w', '/out/w', 2000, 1);";
  ASSERT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
}

int64_t UserVersion(const std::string& path) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, nullptr);
  sqlite3_step(stmt);
  const int64_t version = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return version;
}

TEST_F(JobStoreTest, AVersionZeroDatabaseIsMigratedWithItsRows) {
  MakeVersionZeroDatabase(path_);
  ASSERT_EQ(UserVersion(path_), 0);
  {
    JobStore store(path_);
    const auto jobs = store.List();
    ASSERT_EQ(jobs.size(), 2u);
    EXPECT_EQ(jobs[1].name, "old");
    EXPECT_EQ(jobs[1].state, JobState::kFailed);
    EXPECT_EQ(jobs[1].error, "it broke");
    EXPECT_EQ(jobs[1].attempts, 1);
    EXPECT_EQ(jobs[1].submitted_unix_ms, 1000);
    EXPECT_EQ(jobs[1].launch_id, "");
    EXPECT_EQ(jobs[0].spec_yaml, "spec: w");
    // The migrated table takes the new columns: the queued job launches, and its attempt is kept.
    ASSERT_TRUE(store.MarkRunning(jobs[0].id, "new"));
    EXPECT_EQ(store.Attempts(jobs[0].id).size(), 1u);
    EXPECT_EQ(store.Get(jobs[0].id)->attempts, 1);
  }
  EXPECT_EQ(UserVersion(path_), JobStore::SchemaVersion());
  JobStore reopened(path_);  // opening at the current version changes nothing
  EXPECT_EQ(reopened.List().size(), 2u);
}

TEST_F(JobStoreTest, ADatabaseFromANewerCoordinatorIsRefused) {
  { JobStore store(path_); }
  sqlite3* db = nullptr;
  sqlite3_open(path_.c_str(), &db);
  sqlite3_exec(db, ("PRAGMA user_version = " + std::to_string(JobStore::SchemaVersion() + 1)).c_str(), nullptr, nullptr,
               nullptr);
  sqlite3_close(db);
  EXPECT_THROW(JobStore store(path_), Error);
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
