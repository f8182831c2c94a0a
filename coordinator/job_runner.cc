#include "coordinator/job_runner.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>

#include "common/config/job_spec.h"
#include "common/util/atomic_file.h"
#include "common/util/error.h"
#include "common/util/path_util.h"

extern char** environ;

namespace dpo {
namespace {

// sysexits' EX_TEMPFAIL: a worker group that checkpointed on SIGTERM and asks to be run again.
constexpr int kExitInterrupted = 75;

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The last non-empty line of the end (at most 4 KiB) of a file the runner's own children wrote.
std::string LastLine(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return "";
  constexpr std::streamoff kTail = 4096;
  const std::streamoff size = in.tellg();
  in.seekg(size > kTail ? size - kTail : 0);
  std::string line, last;
  while (std::getline(in, line)) {
    const size_t cr = line.find_last_of('\r');  // a progress bar's carriage returns
    if (cr != std::string::npos) line = line.substr(cr + 1);
    if (line.find_first_not_of(" \t") != std::string::npos) last = line;
  }
  return last;
}

std::string NewLaunchId() {
  std::random_device random;
  std::string id;
  for (int i = 0; i < 4; ++i) {
    char word[9];
    std::snprintf(word, sizeof word, "%08x", static_cast<unsigned>(random()));
    id += word;
  }
  return id;
}

// The environment of process `pid`, NUL-separated; "" when it is gone, a zombie, or not ours.
std::string EnvironOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The value of `name` in an EnvironOf text; "" when absent.
std::string EnvironValue(const std::string& environ_text, const std::string& name) {
  const std::string key = name + "=";
  for (size_t at = 0; at < environ_text.size();) {
    const size_t end = std::min(environ_text.find('\0', at), environ_text.size());
    if (environ_text.compare(at, key.size(), key) == 0) {
      return environ_text.substr(at + key.size(), end - at - key.size());
    }
    at = end + 1;
  }
  return "";
}

struct LiveGroup {
  pid_t pgid = 0;
  std::string environ_text;  // of one of its processes
};

// A live process started under `launch_id` (DPO_LAUNCH_ID in its environment), found in /proc,
// and its process group. Checking the environment, not just the group id, keeps a recycled
// group id of an unrelated program from being taken for ours.
std::optional<LiveGroup> FindLaunch(const std::string& launch_id, pid_t recorded_pgid) {
  if (launch_id.empty()) return std::nullopt;
  if (recorded_pgid > 0 && ::kill(-recorded_pgid, 0) != 0 && errno == ESRCH) return std::nullopt;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return std::nullopt;
  std::optional<LiveGroup> found;
  while (dirent* entry = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::string text = EnvironOf(static_cast<pid_t>(pid));
    if (EnvironValue(text, "DPO_LAUNCH_ID") != launch_id) continue;
    const pid_t pgid = ::getpgid(static_cast<pid_t>(pid));
    if (pgid > 0) {
      found = LiveGroup{pgid, std::move(text)};
      break;
    }
  }
  ::closedir(proc);
  return found;
}

// posix_spawn's attributes and file actions (RAII).
struct SpawnSetup {
  SpawnSetup() {
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&actions);
  }
  ~SpawnSetup() {
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
};

// Starts `words` as the leader of a new process group with stdin /dev/null, stdout and stderr
// appended to `log`, and environment `env`. The signal mask is emptied: the coordinator blocks
// SIGINT/SIGTERM in its threads to take them with sigwait.
pid_t Spawn(std::vector<std::string> words, const std::string& log, std::vector<std::string> env) {
  std::vector<char*> argv;
  argv.reserve(words.size() + 1);
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  SpawnSetup setup;
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setflags(&setup.attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&setup.attr, 0);
  posix_spawnattr_setsigmask(&setup.attr, &none);
  posix_spawn_file_actions_addopen(&setup.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&setup.actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&setup.actions, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &setup.actions, &setup.attr, argv.data(), envp.data());
  if (rc != 0) Fail(words.front(), std::string("cannot start: ") + std::strerror(rc));
  return pid;
}

// This process's environment, less the variables named in `drop`.
std::vector<std::string> EnvironmentWithout(const std::vector<std::string>& drop) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    bool keep = true;
    for (const std::string& name : drop) {
      if (std::strncmp(*e, (name + "=").c_str(), name.size() + 1) == 0) keep = false;
    }
    if (keep) env.emplace_back(*e);
  }
  return env;
}

}  // namespace

JobRunner::JobRunner(JobStore& store, JobRunnerOptions options) : store_(store), options_(std::move(options)) {
  if (options_.worker_binary.empty()) Fail("JobRunnerOptions.worker_binary", "required");
  if (options_.prepare_binary.empty()) Fail("JobRunnerOptions.prepare_binary", "required");
  if (options_.work_dir.empty()) Fail("JobRunnerOptions.work_dir", "required");
  if (options_.slots < 1) Fail("JobRunnerOptions.slots", "must be >= 1");
  if (options_.gpus_per_slot < 0) Fail("JobRunnerOptions.gpus_per_slot", "must be >= 0");
  if (options_.prepare_threads < 1) Fail("JobRunnerOptions.prepare_threads", "must be >= 1");
  if (options_.max_retries < 0) Fail("JobRunnerOptions.max_retries", "must be >= 0");
  MakeDirectories(options_.work_dir);
  for (const JobRecord& job : store_.List(0, JobState::kRunning)) AdoptOrSettle(job);
  thread_ = std::thread([this] { Loop(); });
  for (int i = 0; i < options_.prepare_threads; ++i) preparers_.emplace_back([this] { PrepareLoop(); });
}

JobRunner::~JobRunner() {
  {
    MutexLock lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  for (std::thread& preparer : preparers_) preparer.join();
  std::map<int64_t, Running> running;
  {
    MutexLock lock(mutex_);
    running.swap(running_);
  }
  for (const auto& [id, group] : running) ::kill(-group.pgid, SIGTERM);
  // Groups that exit in time are recorded; the others keep running and are adopted next time.
  const auto deadline = std::chrono::steady_clock::now() + options_.stop_grace;
  while (!running.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    for (auto it = running.begin(); it != running.end();) {
      int status = 0;
      std::optional<int> ended;
      if (!it->second.adopted && ::waitpid(it->second.pgid, &status, WNOHANG) == it->second.pgid) {
        ended = status;
      } else if (!it->second.adopted || FindLaunch(it->second.launch_id, it->second.pgid)) {
        ++it;
        continue;
      }
      try {
        Settle(it->first, it->second, ended, /*stopping=*/true);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "dpo-coordinator: stopping job %lld: %s\n", static_cast<long long>(it->first), e.what());
      }
      it = running.erase(it);
    }
  }
}

void JobRunner::Wake() { wake_.notify_all(); }

std::string JobRunner::LogPath(int64_t id) const {
  return JoinPath(JoinPath(options_.work_dir, "job-" + std::to_string(id)), "worker.log");
}

void JobRunner::Stop(int64_t id) {
  MutexLock lock(mutex_);
  const auto it = running_.find(id);
  if (it != running_.end()) ::kill(-it->second.pgid, SIGTERM);
}

std::optional<WorkerStatus> JobRunner::Progress(const JobRecord& job) {
  {
    MutexLock lock(mutex_);
    const auto it = progress_.find(job.id);
    if (it != progress_.end()) return it->second;
  }
  return job.status_json.empty() ? std::nullopt : ParseWorkerStatus(job.status_json);
}

std::vector<RankStatus> JobRunner::RankProgress(int64_t id) {
  MutexLock lock(mutex_);
  const auto it = rank_progress_.find(id);
  return it == rank_progress_.end() ? std::vector<RankStatus>{} : it->second.ranks;
}

bool JobRunner::Stopping() {
  MutexLock lock(mutex_);
  return stopping_;
}

int JobRunner::FreeSlot() const {
  for (int slot = 0;; ++slot) {
    bool taken = false;
    for (const auto& [id, group] : running_) taken = taken || group.slot == slot;
    if (!taken) return slot;
  }
}

void JobRunner::AdoptOrSettle(const JobRecord& job) {
  const auto live = FindLaunch(job.launch_id, static_cast<pid_t>(job.pgid));
  Running group{live ? live->pgid : static_cast<pid_t>(job.pgid), 0, true, job.launch_id, job.output_dir};
  if (!live) {
    Settle(job.id, group, std::nullopt, /*stopping=*/false);
    return;
  }
  MutexLock lock(mutex_);
  const std::string slot = EnvironValue(live->environ_text, "DPO_LAUNCH_SLOT");
  group.slot = slot.empty() ? FreeSlot() : std::atoi(slot.c_str());
  running_[job.id] = group;
  if (job.cancel_requested) ::kill(-group.pgid, SIGTERM);
}

void JobRunner::Loop() {
  while (true) {
    try {
      Reap();
      LaunchQueued();
    } catch (const std::exception& e) {
      // The store failed (disk full, database removed): say so and keep serving what works.
      std::fprintf(stderr, "dpo-coordinator: scheduling: %s\n", e.what());
    }
    MutexLock lock(mutex_);
    if (stopping_) return;
    wake_.wait_for(mutex_, options_.poll);
  }
}

void JobRunner::PrepareLoop() {
  while (true) {
    std::optional<JobRecord> job;
    {
      MutexLock lock(mutex_);
      if (stopping_) return;
      try {
        // Claimed under the lock, so no two preparers take one job.
        const std::vector<int64_t> busy(preparing_.begin(), preparing_.end());
        job = store_.NextToPrepare(busy);
        if (job) preparing_.insert(job->id);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "dpo-coordinator: preparing: %s\n", e.what());
      }
      // Nothing to prepare, or the store failed (retrying at once would spin).
      if (!job) {
        wake_.wait_for(mutex_, options_.poll);
        continue;
      }
    }
    try {
      Prepare(*job);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dpo-coordinator: preparing job %lld: %s\n", static_cast<long long>(job->id), e.what());
    }
    {
      MutexLock lock(mutex_);
      preparing_.erase(job->id);
    }
    wake_.notify_all();
  }
}

void JobRunner::Prepare(const JobRecord& job) {
  const std::string dir = JoinPath(options_.work_dir, "preparing");
  MakeDirectories(dir);
  const std::string base = JoinPath(dir, "job-" + std::to_string(job.id));
  const std::string spec_path = base + ".yaml", log = base + ".log";
  ::unlink(log.c_str());
  WriteFileAtomically(spec_path, job.spec_yaml);
  std::string reason;
  try {
    const pid_t pid = Spawn({options_.prepare_binary, spec_path}, log, EnvironmentWithout({}));
    const auto deadline = std::chrono::steady_clock::now() + options_.prepare_timeout;
    auto last_check = std::chrono::steady_clock::now();
    int status = 0;
    bool killed = false;  // by us: stopping, cancelled or out of time
    while (!killed && ::waitpid(pid, &status, WNOHANG) == 0) {
      const auto now = std::chrono::steady_clock::now();
      killed = Stopping() || now > deadline;
      if (!killed && now - last_check > std::chrono::milliseconds(250)) {
        last_check = now;  // cancelled (no longer queued) meanwhile?
        const auto current = store_.Get(job.id);
        killed = !current || current->state != JobState::kQueued;
      }
      if (killed) {
        // Its own process group: the kill reaches anything it started, and a blocked open()
        // of a FIFO ends with the process.
        ::kill(-pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        if (now > deadline) {
          reason = "timed out after " + std::to_string(options_.prepare_timeout.count()) + " ms";
        }
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    if (!killed && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      if (store_.MarkPrepared(job.id)) wake_.notify_all();
    } else if (!killed && WIFEXITED(status)) {
      reason = LastLine(log);
      if (reason.empty()) reason = "dpo-prepare-job exited with status " + std::to_string(WEXITSTATUS(status));
    } else if (!killed) {
      reason = "dpo-prepare-job killed by signal " + std::to_string(WTERMSIG(status));
    }
  } catch (const Error& e) {
    reason = e.what();
  }
  ::unlink(spec_path.c_str());
  ::unlink(log.c_str());
  // Killed without a reason: stopping (the next coordinator prepares it) or cancelled.
  if (!reason.empty()) store_.MarkFinished(job.id, JobState::kFailed, 0, "data preparation: " + reason);
}

void JobRunner::Reap() {
  struct Ended {
    int64_t id;
    Running group;
    std::optional<int> wait_status;
  };
  std::vector<Ended> ended;
  std::vector<std::pair<int64_t, Running>> adopted;
  {
    // waitpid and the erase under one lock: no Stop() can signal a reaped (reusable) group id.
    MutexLock lock(mutex_);
    for (auto it = running_.begin(); it != running_.end();) {
      int status = 0;
      if (it->second.adopted) {
        adopted.emplace_back(*it);
      } else if (::waitpid(it->second.pgid, &status, WNOHANG) == it->second.pgid) {
        ended.push_back({it->first, it->second, status});
        progress_.erase(it->first);
        rank_progress_.erase(it->first);
        it = running_.erase(it);
        continue;
      }
      ++it;
    }
  }
  for (const auto& [id, group] : adopted) {
    if (FindLaunch(group.launch_id, group.pgid)) continue;
    MutexLock lock(mutex_);
    running_.erase(id);
    progress_.erase(id);
    rank_progress_.erase(id);
    ended.push_back({id, group, std::nullopt});
  }
  for (const Ended& e : ended) Settle(e.id, e.group, e.wait_status, /*stopping=*/false);
  // Progress of the groups still running, from their status files (bounded, never blocking),
  // and every rank_poll their ranks' own files.
  struct Dir {
    int64_t id;
    std::string path;
    bool read_ranks;
  };
  std::vector<Dir> dirs;
  const auto now = std::chrono::steady_clock::now();
  {
    MutexLock lock(mutex_);
    for (const auto& [id, group] : running_) {
      const auto read = rank_progress_.find(id);
      dirs.push_back(
          {id, group.output_dir, read == rank_progress_.end() || now - read->second.at >= options_.rank_poll});
    }
  }
  for (const Dir& dir : dirs) {
    auto status = ReadWorkerStatus(dir.path);
    std::optional<std::vector<RankStatus>> ranks;
    if (dir.read_ranks) ranks = ReadRankStatuses(dir.path);
    MutexLock lock(mutex_);
    if (!running_.count(dir.id)) continue;
    if (status) progress_[dir.id] = std::move(*status);
    if (ranks) rank_progress_[dir.id] = {now, std::move(*ranks)};
  }
}

void JobRunner::Settle(int64_t id, const Running& group, std::optional<int> wait_status, bool stopping) {
  const auto job = store_.Get(id);
  if (!job || job->state != JobState::kRunning) return;
  std::string problem;
  const auto status = ReadWorkerStatus(group.output_dir, &problem);
  if (status) store_.RecordStatus(id, WorkerStatusJson(*status));
  const bool failed_status = status && status->state == "failed";
  AttemptRecord end;
  end.exit_code = -1;  // unknown for an adopted group
  if (wait_status) {
    end.signal = WIFSIGNALED(*wait_status) ? WTERMSIG(*wait_status) : 0;
    end.exit_code = WIFEXITED(*wait_status) ? WEXITSTATUS(*wait_status) : 128 + end.signal;
  }
  const bool succeeded = wait_status ? end.exit_code == 0 : status && status->state == "succeeded";
  if (job->cancel_requested) {
    store_.MarkFinished(id, JobState::kCancelled, end.exit_code, "", end.signal);
    return;
  }
  if (succeeded) {
    store_.MarkFinished(id, JobState::kSucceeded, 0, "");
    return;
  }
  const bool interrupted =
      end.exit_code == kExitInterrupted || (status && status->state == "interrupted") || (stopping && !failed_status);
  bool retryable = false;
  if (interrupted) {
    end.reason = stopping ? "stopped with the coordinator" : "interrupted: checkpointed on SIGTERM";
  } else if (failed_status) {
    // The failing rank's own message (under mpirun too: not the launcher's abort banner).
    end.reason = status->reason.empty() ? "failed (" + status->error_code + ")" : status->reason;
    retryable = IsRetryableErrorCode(status->error_code);
  } else if (end.signal != 0) {
    end.reason = "killed by signal " + std::to_string(end.signal);
    retryable = true;
  } else if (end.exit_code > 128 && end.exit_code < 128 + 64) {
    // A launcher (mpirun, a shell) reports a process it lost to signal N as 128 + N.
    end.reason = "a process of the group was killed by signal " + std::to_string(end.exit_code - 128);
    retryable = true;
  } else if (!wait_status) {
    end.reason =
        "the worker group ended without a final status (a previous coordinator started it: "
        "its exit status is unknown)";
    retryable = true;
  } else {
    // Ended without a status.json failure (it failed before it could write one): the end of its
    // log is the one clue.
    end.reason = LastLine(LogPath(id));
    if (end.reason.empty()) end.reason = "worker exited with status " + std::to_string(end.exit_code);
  }
  if (!problem.empty()) end.reason += " (" + problem + ")";
  if (interrupted) {
    store_.Requeue(id, end, /*retry=*/false, 0);
  } else if (retryable && job->retries < options_.max_retries) {
    const auto backoff = options_.retry_backoff * (int64_t{1} << job->retries);
    end.reason += "; retry " + std::to_string(job->retries + 1) + " of " + std::to_string(options_.max_retries) +
                  " in " + std::to_string(backoff.count()) + " ms";
    store_.Requeue(id, end, /*retry=*/true, NowUnixMs() + backoff.count());
  } else {
    if (retryable) end.reason += " (after " + std::to_string(job->retries) + " retries)";
    store_.MarkFinished(id, JobState::kFailed, end.exit_code, end.reason, end.signal);
  }
  wake_.notify_all();
}

void JobRunner::LaunchQueued() {
  while (true) {
    int slot = 0;
    {
      MutexLock lock(mutex_);
      if (stopping_ || static_cast<int>(running_.size()) >= options_.slots) return;
      slot = FreeSlot();
    }
    auto job = store_.NextQueued();
    const std::string launch_id = NewLaunchId();
    if (!job || !store_.MarkRunning(job->id, launch_id)) return;
    ++job->attempts;  // as MarkRunning counted it
    pid_t pgid = 0;
    try {
      pgid = Launch(*job, slot, launch_id);
    } catch (const std::exception& e) {
      store_.MarkFinished(job->id, JobState::kFailed, -1, std::string("launch: ") + e.what());
      continue;
    }
    {
      MutexLock lock(mutex_);
      running_[job->id] = Running{pgid, slot, false, launch_id, job->output_dir};
    }
    // A CancelJob between MarkRunning and here found no group to signal; it set the flag, which
    // RecordLaunch reads after the group is in running_. Any later CancelJob finds the group.
    if (store_.RecordLaunch(job->id, launch_id, pgid)) Stop(job->id);
  }
}

pid_t JobRunner::Launch(const JobRecord& job, int slot, const std::string& launch_id) const {
  const std::string dir = JoinPath(options_.work_dir, "job-" + std::to_string(job.id));
  MakeDirectories(dir);
  const std::string spec_path = JoinPath(dir, "job.yaml");
  JobSpec spec = ParseJobSpec(job.spec_yaml, spec_path);
  // A relaunch (interrupted, retried, or the coordinator stopped) continues from its last checkpoint.
  if (job.attempts > 1 && !spec.output.resume_from_checkpoint) {
    spec.output.resume_from_checkpoint = "latest";
  }
  WriteFileAtomically(spec_path, ToYaml(spec));
  // A status.json left by the previous attempt must not be read as this one's.
  ::unlink(JoinPath(job.output_dir, "status.json").c_str());

  std::vector<std::string> words = options_.launcher;
  words.insert(words.end(), {options_.worker_binary, "--job", spec_path});
  // The environment: the launch's id and slot (how a restarted coordinator recognizes the group),
  // and this slot's GPUs when groups are given GPUs of their own.
  std::vector<std::string> drop{"DPO_LAUNCH_ID", "DPO_LAUNCH_SLOT"};
  if (options_.gpus_per_slot > 0) drop.emplace_back("CUDA_VISIBLE_DEVICES");
  std::vector<std::string> env = EnvironmentWithout(drop);
  env.push_back("DPO_LAUNCH_ID=" + launch_id);
  env.push_back("DPO_LAUNCH_SLOT=" + std::to_string(slot));
  if (options_.gpus_per_slot > 0) {
    std::string devices;
    for (int g = 0; g < options_.gpus_per_slot; ++g) {
      devices += (g ? "," : "") + std::to_string(slot * options_.gpus_per_slot + g);
    }
    env.push_back("CUDA_VISIBLE_DEVICES=" + devices);
  }
  return Spawn(std::move(words), LogPath(job.id), std::move(env));
}

}  // namespace dpo
