// The typed status a worker group leaves in <output.dir>/status.json (written atomically by
// dpo-worker; format in docs/worker_status.md), read by the coordinator instead of guessing from
// the worker's log: progress while it runs, and how and why it ended; and each rank's own
// figures (<output.dir>/ranks/rank-R.json), which /metrics serves labelled by rank.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace dpo {

struct WorkerStatus {
  std::string state;  // "running" | "succeeded" | "failed" | "interrupted"
  int64_t step = 0, total_steps = 0;
  std::map<std::string, double> metrics;  // the last train metrics (TRL's names)
  std::string error_code;                 // common/util/error.h's code name when failed; "" otherwise
  std::string reason;                     // one line
  std::optional<int> rank;                // the failing rank, when one is known
};

// The most a status.json may hold; a bigger one is refused unread.
inline constexpr int64_t kMaxWorkerStatusBytes = int64_t{64} * 1024;

// Reads <output_dir>/status.json. nullopt when there is none yet; also nullopt, with `problem`
// set, when it is not a regular file (never opened blocking: a FIFO cannot stall the caller), is
// bigger than kMaxWorkerStatusBytes, or is not a status object.
std::optional<WorkerStatus> ReadWorkerStatus(const std::string& output_dir, std::string* problem = nullptr);

// Parses status.json's text; nullopt when it is not a status object.
std::optional<WorkerStatus> ParseWorkerStatus(const std::string& text);
// The status as status.json text (what the store keeps of a job's last status).
std::string WorkerStatusJson(const WorkerStatus& status);

// One rank's own figures, from <output.dir>/ranks/rank-<R>.json (written atomically by every
// rank of a dpo-worker group after each logged step; worker/train/rank_metrics.h).
struct RankStatus {
  int rank = 0;
  int64_t step = 0;
  // The file's "metrics": step_seconds, tokens_per_second, comm_seconds, comm_hidden_ratio,
  // peak_memory_bytes, skipped_steps_total (numbers only; null and unknown types are dropped).
  std::map<std::string, double> metrics;
};

// The most a rank file may hold (a bigger one is skipped unread), and the most rank files read
// from one job (a group's ranks; anything past it is ignored, so a crowded directory cannot make
// a poll slow).
inline constexpr int64_t kMaxRankStatusBytes = int64_t{4} * 1024;
inline constexpr int kMaxRankStatuses = 4096;

// Reads <output_dir>/ranks/rank-*.json, sorted by rank; empty when there is no such folder.
// Files that are not regular, too big or not rank objects, or whose "rank" disagrees with their
// name, are skipped (never opened blocking, symbolic links not followed).
std::vector<RankStatus> ReadRankStatuses(const std::string& output_dir);

// Parses a rank file's text; nullopt when it is not a rank object.
std::optional<RankStatus> ParseRankStatus(const std::string& text);

// Whether a failure with this status.json error code may succeed when run again (a lost rank, a
// collective timeout, ...; common/util/error.h's table). Unknown codes are not retried.
bool IsRetryableErrorCode(const std::string& error_code);

}  // namespace dpo
