#include "coordinator/job_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/config/data_preparation.h"
#include "common/config/job_spec.h"
#include "common/model/path_util.h"
#include "common/model/safetensors.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/error.h"

extern char** environ;

namespace dpo {
namespace {

// The last non-empty line of a worker log: dpo-worker's one-line reason when it fails.
std::string LastLine(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string line, last;
  while (std::getline(in, line)) {
    const size_t cr = line.find_last_of('\r');  // a progress bar's carriage returns
    if (cr != std::string::npos) line = line.substr(cr + 1);
    if (line.find_first_not_of(" \t") != std::string::npos) last = line;
  }
  return last;
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

}  // namespace

JobRunner::JobRunner(JobStore& store, JobRunnerOptions options)
    : store_(store), options_(std::move(options)) {
  if (options_.worker_binary.empty()) Fail("JobRunnerOptions.worker_binary", "required");
  if (options_.work_dir.empty()) Fail("JobRunnerOptions.work_dir", "required");
  if (options_.slots < 1) Fail("JobRunnerOptions.slots", "must be >= 1");
  if (options_.gpus_per_slot < 0) Fail("JobRunnerOptions.gpus_per_slot", "must be >= 0");
  MakeDirectories(options_.work_dir);
  thread_ = std::thread([this] { Loop(); });
  preparer_ = std::thread([this] { PrepareLoop(); });
}

JobRunner::~JobRunner() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  preparer_.join();
  for (const auto& [id, group] : running_) ::kill(-group.pid, SIGTERM);
  // A worker that has not exited 30 s after SIGTERM is killed: stopping must not hang.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (const auto& [id, group] : running_) {
    const pid_t pid = group.pid;
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(-pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

void JobRunner::Wake() { wake_.notify_all(); }

std::string JobRunner::LogPath(int64_t id) const {
  return JoinPath(JoinPath(options_.work_dir, "job-" + std::to_string(id)), "worker.log");
}

void JobRunner::Stop(int64_t id) {
  std::lock_guard lock(mutex_);
  const auto it = running_.find(id);
  if (it != running_.end()) ::kill(-it->second.pid, SIGTERM);
}

void JobRunner::Loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    try {
      Reap();
      LaunchQueued();
    } catch (const std::exception& e) {
      // The store failed (disk full, database removed): say so and keep serving what works.
      std::fprintf(stderr, "dpo-coordinator: scheduling: %s\n", e.what());
    }
    lock.lock();
    wake_.wait_for(lock, options_.poll);
  }
}

void JobRunner::PrepareLoop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    std::optional<JobRecord> job;
    bool settled = false;  // a job was prepared, or its failure recorded: look for the next now
    try {
      job = store_.NextToPrepare();
      if (job) {
        const JobSpec spec = ParseJobSpec(job->spec_yaml, "job " + std::to_string(job->id));
        const auto tokenizer = Tokenizer::Load(spec.tokenizer.path);
        std::vector<std::string> sources{spec.data.train};
        if (spec.data.eval) sources.push_back(*spec.data.eval);
        for (const std::string& source : sources) {
          if (PrepareForSpec(*tokenizer, spec.data, source).report.pairs == 0) {
            Fail(source, "no usable preference pairs after preparation");
          }
        }
        if (store_.MarkPrepared(job->id)) wake_.notify_all();
        settled = true;
      }
    } catch (const std::exception& e) {
      if (job) {
        std::string reason = std::string("data preparation: ") + e.what();
        for (char& c : reason) c = c == '\n' ? ' ' : c;
        try {
          store_.MarkFinished(job->id, JobState::kFailed, 0, reason);
          settled = true;
        } catch (const std::exception& again) {
          std::fprintf(stderr, "dpo-coordinator: preparing job %lld: %s\n",
                       static_cast<long long>(job->id), again.what());
        }
      } else {
        std::fprintf(stderr, "dpo-coordinator: preparing: %s\n", e.what());
      }
    }
    lock.lock();
    // Otherwise wait: nothing to prepare, or the store failed (retrying at once would spin).
    if (!settled) wake_.wait_for(lock, options_.poll);
  }
}

void JobRunner::Reap() {
  std::vector<std::pair<int64_t, Running>> running;
  {
    std::lock_guard lock(mutex_);
    running.assign(running_.begin(), running_.end());
  }
  for (const auto& [id, group] : running) {
    int status = 0;
    if (::waitpid(group.pid, &status, WNOHANG) != group.pid) continue;
    {
      std::lock_guard lock(mutex_);
      running_.erase(id);
    }
    const int exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    const auto job = store_.Get(id);
    JobState state = exit_code == 0 ? JobState::kSucceeded : JobState::kFailed;
    if (job && job->cancel_requested) state = JobState::kCancelled;
    std::string error;
    if (state == JobState::kFailed) {
      error = LastLine(LogPath(id));
      if (error.empty()) error = "worker exited with status " + std::to_string(exit_code);
    }
    store_.MarkFinished(id, state, exit_code, error);
  }
}

void JobRunner::LaunchQueued() {
  while (true) {
    int slot = 0;
    {
      std::lock_guard lock(mutex_);
      if (stopping_ || static_cast<int>(running_.size()) >= options_.slots) return;
      // The lowest slot no running group holds.
      auto taken = [this](int s) {
        for (const auto& [id, group] : running_) {
          if (group.slot == s) return true;
        }
        return false;
      };
      while (taken(slot)) ++slot;
    }
    auto job = store_.NextQueued();
    if (!job || !store_.MarkRunning(job->id)) return;
    ++job->attempts;  // as MarkRunning counted it
    try {
      const pid_t pid = Launch(*job, slot);
      std::lock_guard lock(mutex_);
      running_[job->id] = Running{pid, slot};
    } catch (const std::exception& e) {
      store_.MarkFinished(job->id, JobState::kFailed, -1, std::string("launch: ") + e.what());
    }
  }
}

pid_t JobRunner::Launch(const JobRecord& job, int slot) {
  const std::string dir = JoinPath(options_.work_dir, "job-" + std::to_string(job.id));
  MakeDirectories(dir);
  const std::string spec_path = JoinPath(dir, "job.yaml");
  JobSpec spec = ParseJobSpec(job.spec_yaml, spec_path);
  // A relaunch (the coordinator stopped while the job ran) continues from its last checkpoint.
  if (job.attempts > 1 && !spec.output.resume_from_checkpoint) {
    spec.output.resume_from_checkpoint = "latest";
  }
  WriteFileAtomically(spec_path, ToYaml(spec));

  std::vector<std::string> words = options_.launcher;
  words.insert(words.end(), {options_.worker_binary, "--job", spec_path});
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);

  const std::string log = LogPath(job.id);
  SpawnSetup setup;
  // Its own process group, so a cancel reaches mpirun's ranks too; and an empty signal mask,
  // since the coordinator blocks SIGINT/SIGTERM in its threads to take them with sigwait.
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setflags(&setup.attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&setup.attr, 0);
  posix_spawnattr_setsigmask(&setup.attr, &none);
  posix_spawn_file_actions_addopen(&setup.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&setup.actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&setup.actions, 1, 2);
  // The environment, with this slot's GPUs when groups are given GPUs of their own.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (options_.gpus_per_slot == 0 || std::strncmp(*e, "CUDA_VISIBLE_DEVICES=", 21) != 0) {
      env_strings.emplace_back(*e);
    }
  }
  if (options_.gpus_per_slot > 0) {
    std::string devices;
    for (int g = 0; g < options_.gpus_per_slot; ++g) {
      devices += (g ? "," : "") + std::to_string(slot * options_.gpus_per_slot + g);
    }
    env_strings.push_back("CUDA_VISIBLE_DEVICES=" + devices);
  }
  std::vector<char*> env;
  for (std::string& e : env_strings) env.push_back(e.data());
  env.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &setup.actions, &setup.attr, argv.data(), env.data());
  if (rc != 0) Fail(words.front(), std::string("cannot start: ") + std::strerror(rc));
  return pid;
}

}  // namespace dpo
