// Runs queued jobs in two stages, each on its own thread:
//   prepare  tokenizes the job's data sets into their prepared files (common/config/
//            data_preparation.h), oldest job first, holding no worker group: bad data fails the
//            job here, with file:line, and the worker later maps the files instead of tokenizing;
//   launch   one worker group (a dpo-worker process, or an mpirun of them) per prepared job, at
//            most `slots` at once, oldest first, each group on its own GPUs (gpus_per_slot).
//
// For job N it writes <work_dir>/job-N/job.yaml (the resolved spec) and starts
//   [launcher...] worker_binary --job <work_dir>/job-N/job.yaml
// in its own process group, output in <work_dir>/job-N/worker.log. Exit 0 is SUCCEEDED; any
// other exit is FAILED with the log's last line (dpo-worker's one-line reason) as the error.
// A job launched again after a coordinator restart resumes from its latest checkpoint.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/job_store.h"

namespace dpo {

struct JobRunnerOptions {
  std::string worker_binary;          // dpo-worker. Required.
  // Words put before the worker, e.g. {"mpirun", "-np", "4"}. Default: none (one process).
  std::vector<std::string> launcher;
  std::string work_dir;               // Required: per-job spec and log folders.
  // Jobs running at once (worker groups). Default: 1, one job owns the machine.
  int slots = 1;
  // GPUs per worker group: group s sees GPUs [s * n, (s + 1) * n) through CUDA_VISIBLE_DEVICES,
  // so concurrent groups never share a GPU. Default: 0, the environment's devices untouched.
  int gpus_per_slot = 0;
  // How often finished workers are reaped and queued jobs looked for when nothing wakes the
  // runner. Default: 200 ms.
  std::chrono::milliseconds poll{200};
};

class JobRunner {
 public:
  // Starts the preparing and launching threads. `store` must outlive the runner.
  JobRunner(JobStore& store, JobRunnerOptions options);
  // Stops scheduling and terminates running workers (SIGTERM to their process groups; SIGKILL
  // after 30 s): they stay RUNNING in the store, and the next coordinator relaunches them.
  ~JobRunner();
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  // A job was queued: look now instead of at the next poll.
  void Wake();
  // <work_dir>/job-<id>/worker.log: the output of the job's worker group.
  std::string LogPath(int64_t id) const;
  // Stops job `id` if this runner runs it (SIGTERM to its process group); it is recorded as
  // CANCELLED when it has exited.
  void Stop(int64_t id);

 private:
  void Loop();
  void PrepareLoop();
  void Reap();
  void LaunchQueued();
  pid_t Launch(const JobRecord& job, int slot);

  JobStore& store_;
  JobRunnerOptions options_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  struct Running {
    pid_t pid;  // process group leader
    int slot;
  };
  std::map<int64_t, Running> running_;  // by job id
  std::thread thread_, preparer_;
};

}  // namespace dpo
