// The coordinator's durable job table: one SQLite database file (WAL, synchronous=FULL), so a
// job accepted by SubmitJob survives a crash of the coordinator.
//
// Every method is safe to call from several threads (one connection, serialized by a mutex).
// Errors (cannot open, disk full, corrupt file) throw dpo::Error naming the database path.
//
// One process owns a database: the store holds an exclusive flock on `<path>.lock` while open,
// so a second coordinator on the same file refuses to start. The schema carries its version
// (PRAGMA user_version); an older database is migrated forward at open, in one transaction.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/annotated_mutex.h"

struct sqlite3;

namespace dpo {

enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };
std::string_view ToString(JobState state);  // "queued", "running", ...
bool IsFinished(JobState state);

struct JobRecord {
  int64_t id = 0;
  std::string name;
  JobState state = JobState::kQueued;
  std::string spec_yaml;  // resolved: absolute paths, every key
  std::string output_dir;
  int64_t submitted_unix_ms = 0, started_unix_ms = 0, finished_unix_ms = 0;
  int exit_code = 0;
  std::string error;  // one-line reason for FAILED
  int attempts = 0;   // launches so far
  bool cancel_requested = false;
  bool data_prepared = false;  // its data sets are tokenized; only then may it launch
  // The latest launch: its id (in the group's environment as DPO_LAUNCH_ID) and process group
  // (0 until the group has started).
  std::string launch_id;
  int64_t pgid = 0;
  int retries = 0;                 // launches that were retries of a transient failure
  int64_t not_before_unix_ms = 0;  // a requeued job launches no earlier (retry backoff)
  // The worker's status.json as its group last left it (coordinator/worker_status.h; "" if none):
  // the progress of a job that is no longer running.
  std::string status_json;
  std::string owner;  // the user who submitted it ("" for jobs from before users existed)
};

// One launch of a job's worker group.
struct AttemptRecord {
  int number = 0;  // 1, 2, ...
  std::string launch_id;
  int64_t pgid = 0;
  int64_t started_unix_ms = 0, finished_unix_ms = 0;  // finished 0 while it runs
  int exit_code = 0;   // the group's exit status; -1 when unknown (adopted, or never started)
  int signal = 0;      // the signal that killed it, 0 if none
  std::string reason;  // why it ended ("" for success)
};

class JobStore {
 public:
  // Opens (creating if missing, migrating if older) the database at `path`, and locks it.
  explicit JobStore(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // The schema version this build writes (PRAGMA user_version).
  static int SchemaVersion();

  struct InsertResult {
    JobRecord job;  // the new job; or, when not inserted, the job that holds output_dir
    bool inserted = false;
  };
  // Inserts a QUEUED job and returns it with its id, unless a queued or running job already
  // writes to output_dir: then nothing is inserted. One transaction under the lock, so two
  // submissions of one directory cannot both pass.
  InsertResult Insert(const std::string& name, const std::string& spec_yaml, const std::string& output_dir,
                      const std::string& owner = "") ABSL_LOCKS_EXCLUDED(mutex_);
  std::optional<JobRecord> Get(int64_t id) ABSL_LOCKS_EXCLUDED(mutex_);
  // Newest first; limit 0 = all; only jobs in `state` when given.
  std::vector<JobRecord> List(int limit = 0, std::optional<JobState> state = std::nullopt) ABSL_LOCKS_EXCLUDED(mutex_);
  // One page of a listing, newest first.
  struct ListQuery {
    std::string owner;              // only this user's jobs; "" = everyone's
    std::optional<JobState> state;  // only jobs in this state; null = all
    int page_size = 100;            // at most this many jobs (> 0)
    int64_t before_id = 0;          // only jobs older than this id; 0 = from the newest
  };
  struct ListPage {
    std::vector<JobRecord> jobs;
    int64_t next_before_id = 0;  // the next page's before_id; 0 when this is the last page
  };
  ListPage List(const ListQuery& query) ABSL_LOCKS_EXCLUDED(mutex_);
  // The oldest QUEUED job whose data is not prepared yet and whose id is not in `busy` (being
  // prepared already), if any.
  std::optional<JobRecord> NextToPrepare(const std::vector<int64_t>& busy = {}) ABSL_LOCKS_EXCLUDED(mutex_);
  // Records that a QUEUED job's data is prepared. False if it is no longer queued.
  bool MarkPrepared(int64_t id) ABSL_LOCKS_EXCLUDED(mutex_);
  // The oldest QUEUED job whose data is prepared and whose backoff has passed: the next to launch.
  std::optional<JobRecord> NextQueued() ABSL_LOCKS_EXCLUDED(mutex_);
  // QUEUED -> RUNNING under launch `launch_id`, counting the attempt and opening its attempts
  // row. False if the job was no longer queued.
  bool MarkRunning(int64_t id, const std::string& launch_id) ABSL_LOCKS_EXCLUDED(mutex_);
  // Records the process group of the running launch `launch_id`. Returns whether a cancel was
  // requested meanwhile (the caller must then stop the group it just started).
  bool RecordLaunch(int64_t id, const std::string& launch_id, int64_t pgid) ABSL_LOCKS_EXCLUDED(mutex_);
  // RUNNING (or, when its data cannot be prepared, QUEUED) -> SUCCEEDED / FAILED / CANCELLED
  // with the worker's exit status (0 when none ran), the signal that killed it (0: none) and
  // reason; closes the open attempt. A finished job stays as it is.
  void MarkFinished(int64_t id, JobState state, int exit_code, const std::string& error, int signal = 0)
      ABSL_LOCKS_EXCLUDED(mutex_);
  // RUNNING -> QUEUED, to be launched again no earlier than `not_before_unix_ms`, closing the
  // open attempt with its end; `retry` counts it as a retry. A job whose cancel was requested
  // becomes CANCELLED instead: cancel wins. Returns the state the job is left in.
  JobState Requeue(int64_t id, const AttemptRecord& end, bool retry, int64_t not_before_unix_ms)
      ABSL_LOCKS_EXCLUDED(mutex_);
  // Keeps the worker's last status (WorkerStatusJson) of job `id`.
  void RecordStatus(int64_t id, const std::string& status_json) ABSL_LOCKS_EXCLUDED(mutex_);
  // QUEUED -> CANCELLED (true), or RUNNING -> cancel requested (false: the caller stops the
  // process, and MarkFinished records CANCELLED once it exits). Throws for a finished job.
  bool RequestCancel(int64_t id) ABSL_LOCKS_EXCLUDED(mutex_);
  // Every attempt of job `id`, oldest first.
  std::vector<AttemptRecord> Attempts(int64_t id) ABSL_LOCKS_EXCLUDED(mutex_);
  // Jobs per state, every state present (0 when none).
  std::vector<std::pair<JobState, int64_t>> CountByState() ABSL_LOCKS_EXCLUDED(mutex_);

 private:
  void Exec(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  std::optional<JobRecord> GetLocked(int64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void CloseAttempt(int64_t id, const AttemptRecord& end) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  std::string path_;
  int lock_fd_ = -1;  // the flock on <path>.lock
  Mutex mutex_;
  sqlite3* db_ ABSL_GUARDED_BY(mutex_) = nullptr;
};

}  // namespace dpo
