// The coordinator's durable job table: one SQLite database file (WAL, synchronous=FULL), so a
// job accepted by SubmitJob survives a crash of the coordinator.
//
// Every method is safe to call from several threads (one connection, serialized by a mutex).
// Errors (cannot open, disk full, corrupt file) throw dpo::Error naming the database path.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace dpo {

enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };
std::string_view ToString(JobState state);  // "queued", "running", ...
bool IsFinished(JobState state);

struct JobRecord {
  int64_t id = 0;
  std::string name;
  JobState state = JobState::kQueued;
  std::string spec_yaml;   // resolved: absolute paths, every key
  std::string output_dir;
  int64_t submitted_unix_ms = 0, started_unix_ms = 0, finished_unix_ms = 0;
  int exit_code = 0;
  std::string error;       // one-line reason for FAILED
  int attempts = 0;        // launches so far
  bool cancel_requested = false;
  bool data_prepared = false;  // its data sets are tokenized; only then may it launch
};

class JobStore {
 public:
  // Opens (creating if missing) the database at `path`.
  explicit JobStore(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  struct InsertResult {
    JobRecord job;   // the new job; or, when not inserted, the job that holds output_dir
    bool inserted = false;
  };
  // Inserts a QUEUED job and returns it with its id, unless a queued or running job already
  // writes to output_dir: then nothing is inserted. One transaction under the lock, so two
  // submissions of one directory cannot both pass.
  InsertResult Insert(const std::string& name, const std::string& spec_yaml,
                      const std::string& output_dir);
  std::optional<JobRecord> Get(int64_t id);
  // Newest first; limit 0 = all; only jobs in `state` when given.
  std::vector<JobRecord> List(int limit = 0, std::optional<JobState> state = std::nullopt);
  // The oldest QUEUED job whose data is not prepared yet, if any.
  std::optional<JobRecord> NextToPrepare();
  // Records that a QUEUED job's data is prepared. False if it is no longer queued.
  bool MarkPrepared(int64_t id);
  // The oldest QUEUED job whose data is prepared, if any: the next to launch.
  std::optional<JobRecord> NextQueued();
  // QUEUED -> RUNNING, counting the attempt. False if the job was no longer queued.
  bool MarkRunning(int64_t id);
  // RUNNING (or, when its data cannot be prepared, QUEUED) -> SUCCEEDED / FAILED / CANCELLED
  // with the worker's exit status (0 when none ran) and reason. A finished job stays as it is.
  void MarkFinished(int64_t id, JobState state, int exit_code, const std::string& error);
  // QUEUED -> CANCELLED (true), or RUNNING -> cancel requested (false: the caller stops the
  // process, and MarkFinished records CANCELLED once it exits). Throws for a finished job.
  bool RequestCancel(int64_t id);
  // Jobs left RUNNING by a coordinator that stopped go back to QUEUED, to be launched again
  // (those whose cancel was requested become CANCELLED). Returns how many were requeued.
  int RequeueInterrupted();
  // Jobs per state, every state present (0 when none).
  std::vector<std::pair<JobState, int64_t>> CountByState();

 private:
  void Exec(const std::string& sql);
  std::optional<JobRecord> OldestQueued(bool data_prepared);
  std::string path_;
  sqlite3* db_ = nullptr;
  std::mutex mutex_;
};

}  // namespace dpo
