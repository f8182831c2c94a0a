// The collective timeout every process group enforces (train.collective_timeout_seconds).
//
// A watchdog thread watches the collectives in flight: a host wait (MPI, a stream sync) from
// its start to its end, or a queued NCCL collective until its event completes. When one has
// waited longer than the timeout, or the backend reports an asynchronous error, the watchdog
// names the rank most likely at fault, reports the failure through on_failure (which writes the
// job's status), aborts the backend and ends the process with the code's exit status, so the
// launcher (mpirun) tears the job down. It never calls MPI itself (MPI runs FUNNELED).
//
// Naming the rank: every rank's watchdog rewrites <heartbeat_dir>/.heartbeat-rank-R each second
// with the number of collectives the rank has entered and the time. A rank stopped or hung
// outside MPI (SIGSTOP, a stuck kernel) stops writing it; a rank still computing keeps writing
// it but enters fewer collectives. The stalest heartbeat, else the lowest count, is the suspect.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "common/util/error.h"
#include "common/util/unique_fd.h"

namespace dpo {

struct CollectiveTimeoutOptions {
  // Longest one collective may wait. Default: 0 = no timeout and no watchdog thread.
  double seconds = 0;
  // Directory of the ranks' heartbeat files, shared by the ranks (the job's output directory).
  // Default: empty = no heartbeats, so a timeout names no rank.
  std::string heartbeat_dir;
  // Called once, on the watchdog thread, before the process ends: `suspect_rank` is the rank the
  // failure is blamed on, or -1. Default: none (the reason still goes to stderr).
  std::function<void(ErrorCode code, const std::string& reason, int suspect_rank)> on_failure;
};

class CollectiveWatchdog {
 public:
  // What the backend lets the watchdog do, on the watchdog thread. async_error: a non-empty text
  // when the communicator failed (ncclCommGetAsyncError). abort: frees a communicator whose
  // kernels may never finish (ncclCommAbort). Either may be empty.
  struct Backend {
    std::function<std::string()> async_error;
    std::function<void()> abort;
  };

  // A collective in flight until this handle is destroyed (RAII), and, when `done` was given,
  // until `done` returns true (polled by the watchdog; must be thread-safe).
  class Watch {
   public:
    Watch(CollectiveWatchdog* watchdog, uint64_t id) : watchdog_(watchdog), id_(id) {}
    ~Watch();
    Watch(const Watch&) = delete;  // returned as a prvalue only (guaranteed elision)
    Watch& operator=(const Watch&) = delete;

   private:
    CollectiveWatchdog* watchdog_;
    uint64_t id_;
  };

  // Starts the thread when options.seconds > 0 and world_size > 1; otherwise watches nothing.
  CollectiveWatchdog(int rank, int world_size, CollectiveTimeoutOptions options, Backend backend = {});
  // Stops the thread and removes this rank's heartbeat file.
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  // Counts a collective this rank enters and watches it. `op` is a string literal ("MPI Bcast").
  Watch Start(const char* op);
  // The same, for a collective that is also in flight until `done` returns true (an event).
  void StartUntil(const char* op, std::function<bool()> done);

 private:
  struct InFlight {
    const char* op;
    std::chrono::steady_clock::time_point start;
    std::function<bool()> done;  // empty: until its Watch ends
    bool watched;                // its Watch is alive
  };
  uint64_t Add(const char* op, std::function<bool()> done, bool watched);
  void Release(uint64_t id);
  void Run();
  void WriteHeartbeat(uint64_t entered);  // without mutex_ held: a slow file system blocks nobody
  // The rank blamed for a stall of this rank, and why ("rank 1 stopped responding: ...").
  std::pair<int, std::string> Suspect() const;
  [[noreturn]] void FailJob(ErrorCode code, const std::string& reason, int suspect);

  const int rank_, world_size_;
  const CollectiveTimeoutOptions options_;
  const Backend backend_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  uint64_t next_id_ = 0;
  uint64_t entered_ = 0;  // collectives this rank has entered
  std::map<uint64_t, InFlight> in_flight_;
  UniqueFd heartbeat_;  // opened lazily: the directory may not exist yet at start
  std::thread thread_;  // last: starts after everything it reads
};

}  // namespace dpo
