// The typed status a worker group leaves in <output.dir>/status.json (written atomically by
// dpo-worker; format in docs/worker_status.md), read by the coordinator instead of guessing from
// the worker's log: progress while it runs, and how and why it ended.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace dpo {

struct WorkerStatus {
  std::string state;  // "running" | "succeeded" | "failed" | "interrupted"
  int64_t step = 0, total_steps = 0;
  std::map<std::string, double> metrics;  // the last train metrics (TRL's names)
  std::string error_code;  // common/util/error.h's code name when failed; "" otherwise
  std::string reason;      // one line
  std::optional<int> rank;  // the failing rank, when one is known
};

// The most a status.json may hold; a bigger one is refused unread.
inline constexpr int64_t kMaxWorkerStatusBytes = 64 * 1024;

// Reads <output_dir>/status.json. nullopt when there is none yet; also nullopt, with `problem`
// set, when it is not a regular file (never opened blocking: a FIFO cannot stall the caller), is
// bigger than kMaxWorkerStatusBytes, or is not a status object.
std::optional<WorkerStatus> ReadWorkerStatus(const std::string& output_dir, std::string* problem = nullptr);

// Parses status.json's text; nullopt when it is not a status object.
std::optional<WorkerStatus> ParseWorkerStatus(const std::string& text);
// The status as status.json text (what the store keeps of a job's last status).
std::string WorkerStatusJson(const WorkerStatus& status);

// Whether a failure with this status.json error code may succeed when run again (a lost rank, a
// collective timeout, ...; common/util/error.h's table). Unknown codes are not retried.
bool IsRetryableErrorCode(const std::string& error_code);

}  // namespace dpo
