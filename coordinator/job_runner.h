// Runs queued jobs in two stages:
//   prepare  tokenizes the job's data sets into their prepared files (common/config/
//            data_preparation.h), oldest job first, on a pool of threads, each job in a child
//            process (dpo-prepare-job) with a time limit: a stuck job (a FIFO as data.train) is
//            killed at its limit, on cancel or at shutdown, and never holds up the others. Bad
//            data fails the job here, with file:line, holding no worker group; the worker later
//            maps the files instead of tokenizing;
//   launch   one worker group (a dpo-worker process, or an mpirun of them) per prepared job, at
//            most `slots` at once, oldest first, each group on its own GPUs (gpus_per_slot).
//
// For job N it writes <work_dir>/job-N/job.yaml (the resolved spec) and starts
//   [launcher...] worker_binary --job <work_dir>/job-N/job.yaml
// in its own process group, output in <work_dir>/job-N/worker.log, with DPO_LAUNCH_ID (a random
// id, recorded in the store with the group's id) in its environment.
//
// How a group ended comes from its <output.dir>/status.json (worker_status.h) and its wait
// status: exit 0 is SUCCEEDED; exit 75 (or state "interrupted": it checkpointed on SIGTERM) is
// requeued at once; a retryable failure (killed by a signal, a lost rank, a collective timeout)
// is requeued after a backoff, up to max_retries times; anything else is FAILED with the
// status's one-line reason. A cancel requested meanwhile wins over all of these. A job launched
// again resumes from its latest checkpoint. Every launch is an attempt in the store.
//
// Restart: groups of a previous coordinator that are still alive (found by their launch id in
// /proc) are adopted and watched until they exit; a job whose group ended while no coordinator
// ran is settled from its status.json, never launched twice.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/annotated_mutex.h"
#include "coordinator/job_store.h"
#include "coordinator/worker_status.h"

namespace dpo {

struct JobRunnerOptions {
  std::string worker_binary;   // dpo-worker. Required.
  std::string prepare_binary;  // dpo-prepare-job. Required.
  // Words put before the worker, e.g. {"mpirun", "-np", "4"}. Default: none (one process).
  std::vector<std::string> launcher;
  std::string work_dir;  // Required: per-job spec and log folders.
  // Jobs running at once (worker groups). Default: 1, one job owns the machine.
  int slots = 1;
  // GPUs per worker group: group s sees GPUs [s * n, (s + 1) * n) through CUDA_VISIBLE_DEVICES,
  // so concurrent groups never share a GPU. Default: 0, the environment's devices untouched.
  int gpus_per_slot = 0;
  // How often finished workers are reaped and queued jobs looked for when nothing wakes the
  // runner. Default: 200 ms.
  std::chrono::milliseconds poll{200};
  // How often each running group's per-rank files (<output.dir>/ranks/rank-R.json) are read.
  // Default: 5 s, a third of Prometheus's usual 15 s scrape interval: fresh enough for every
  // scrape, and a 1,000-rank job costs 200 small reads a second, not 5,000.
  std::chrono::milliseconds rank_poll{5000};
  // Jobs whose data is prepared at once. Default: 2.
  int prepare_threads = 2;
  // A job's data preparation is killed, and the job failed, after this long. Default: 1 h.
  std::chrono::milliseconds prepare_timeout{std::chrono::hours(1)};
  // Launches after a retryable failure, per job. Default: 2.
  int max_retries = 2;
  // The n-th retry waits retry_backoff * 2^(n-1). Default: 5 s.
  std::chrono::milliseconds retry_backoff{5000};
  // At shutdown, how long running groups get to exit on SIGTERM (checkpointing); those still
  // running are left to the next coordinator, which adopts them. Default: 8 s, so that the
  // coordinator stops within 10 s.
  std::chrono::milliseconds stop_grace{8000};
};

class JobRunner {
 public:
  // Settles the jobs a previous coordinator left RUNNING (adopting their live groups), then
  // starts the preparing and launching threads. `store` must outlive the runner.
  JobRunner(JobStore& store, JobRunnerOptions options);
  // Stops scheduling and preparing, sends SIGTERM to the running groups and records those that
  // exit within stop_grace (requeued: the next coordinator relaunches them).
  ~JobRunner();
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  // A job was queued: look now instead of at the next poll.
  void Wake();
  // <work_dir>/job-<id>/worker.log: the output of the job's worker group.
  std::string LogPath(int64_t id) const;
  // Stops job `id` if this runner runs it (SIGTERM to its process group); it is recorded as
  // CANCELLED when it has exited.
  void Stop(int64_t id) ABSL_LOCKS_EXCLUDED(mutex_);
  // The worker's status of `job`: for a running job as last read (every poll), otherwise as its
  // group left it (kept in the store); nullopt when there is none. For RPC handlers, which must
  // not open user-named files themselves.
  std::optional<WorkerStatus> Progress(const JobRecord& job) ABSL_LOCKS_EXCLUDED(mutex_);
  // Each rank's own figures of running job `id`, as last read (every rank_poll), by rank; empty
  // when the job is not running or its ranks have not logged a step yet.
  std::vector<RankStatus> RankProgress(int64_t id) ABSL_LOCKS_EXCLUDED(mutex_);

 private:
  struct Running {
    pid_t pgid;  // process group (its leader's pid)
    int slot;
    bool adopted;  // started by a previous coordinator: not our child, watched through /proc
    std::string launch_id;
    std::string output_dir;
  };

  void Loop() ABSL_LOCKS_EXCLUDED(mutex_);
  void PrepareLoop() ABSL_LOCKS_EXCLUDED(mutex_);
  // Prepares one job in a dpo-prepare-job child; records the outcome unless the runner stops.
  void Prepare(const JobRecord& job) ABSL_LOCKS_EXCLUDED(mutex_);
  void AdoptOrSettle(const JobRecord& job) ABSL_LOCKS_EXCLUDED(mutex_);
  void Reap() ABSL_LOCKS_EXCLUDED(mutex_);
  // Records how a group ended: `wait_status` from waitpid, none for an adopted group.
  void Settle(int64_t id, const Running& group, std::optional<int> wait_status, bool stopping)
      ABSL_LOCKS_EXCLUDED(mutex_);
  void LaunchQueued() ABSL_LOCKS_EXCLUDED(mutex_);
  pid_t Launch(const JobRecord& job, int slot, const std::string& launch_id) const;
  int FreeSlot() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  bool Stopping() ABSL_LOCKS_EXCLUDED(mutex_);

  JobStore& store_;
  const JobRunnerOptions options_;
  Mutex mutex_;
  std::condition_variable_any wake_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::map<int64_t, Running> running_ ABSL_GUARDED_BY(mutex_);        // by job id
  std::map<int64_t, WorkerStatus> progress_ ABSL_GUARDED_BY(mutex_);  // by job id, running only
  struct RankProgressRead {
    std::chrono::steady_clock::time_point at;
    std::vector<RankStatus> ranks;
  };
  std::map<int64_t, RankProgressRead> rank_progress_ ABSL_GUARDED_BY(mutex_);  // running only
  std::set<int64_t> preparing_ ABSL_GUARDED_BY(mutex_);                        // ids of the jobs being prepared
  std::thread thread_;
  std::vector<std::thread> preparers_;
};

}  // namespace dpo
