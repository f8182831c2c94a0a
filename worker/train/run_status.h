// <output.dir>/status.json: the worker's typed status, which the coordinator reads instead of
// guessing from logs. Format and codes: docs/worker_status.md. Every write is atomic (temp file,
// fsync, rename), so a reader sees a whole old or a whole new file.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "common/util/error.h"

namespace dpo {

enum class RunState { kRunning, kSucceeded, kFailed, kInterrupted };

struct RunStatus {
  RunState state = RunState::kRunning;
  int64_t step = 0;                       // optimizer steps done
  int64_t total_steps = 0;                // 0 until set-up has worked it out
  std::map<std::string, double> metrics;  // the last train metrics line (metrics.jsonl's keys)
  std::optional<ErrorCode> error_code;    // failed or interrupted only
  std::string reason;                     // one line; empty while running and after success
  std::optional<int> rank;                // the failing (or blamed) rank
};

// status.json's text for `status`.
std::string RunStatusJson(const RunStatus& status);

// One rank's view of the run, written to <output_dir>/status.json. Thread-safe: the collective
// watchdog reports a timeout from its own thread.
class RunStatusFile {
 public:
  RunStatusFile(std::string output_dir, int rank);

  // Records progress; rank 0 writes it as "running" (the other ranks keep it for a failure).
  void Progress(int64_t step, int64_t total_steps, const std::map<std::string, double>& metrics);
  // Writes the end of the run, from this rank whatever its number: rank 0 for success and
  // interruption, the rank that failed for a failure (its own message, before MPI_Abort).
  // `rank` is the rank to name (failures). Never throws: a status that cannot be written must
  // not hide the failure being reported (the reason also goes to stderr).
  void Finish(RunState state, std::optional<ErrorCode> code, const std::string& reason, std::optional<int> rank);

 private:
  void Write();  // with mutex_ held
  const std::string path_;
  const int rank_;
  std::mutex mutex_;
  RunStatus status_;
};

}  // namespace dpo
