// dpo-worker --job JOB.yaml
// Runs one DPO training job: one process, or one rank per GPU/CPU process under mpirun.
// <output.dir>/status.json says how it ended, typed (docs/worker_status.md); rank 0 holds
// <output.dir>/.lock for the run. Every rank writes its own figures to
// <output.dir>/ranks/rank-R.json after each logged step.
//
// dpo-worker --plan JOB.yaml --ranks N [--gpu-memory GiB] [--json]
// Prints the memory one rank would need in each train.sharding mode (common/config/
// memory_plan.h) and exits: no collectives, no weights, only the model's config.json.
//
// Exit status (docs/cli.md): 0 on success; 1 with a one-line reason on stderr; 2 on bad usage
// (on every rank, under mpirun); and the statuses of common/util/error.h's table: 75 when SIGTERM
// stopped it after a checkpoint, 76 when a collective timed out.
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

#include <torch/torch.h>

#include "common/config/job_spec.h"
#include "common/config/memory_plan.h"
#include "common/tensor/device.h"
#include "common/util/atomic_file.h"
#include "common/util/cli.h"
#include "common/util/error.h"
#include "worker/comm/process_group.h"
#include "worker/train/checkpoint.h"
#include "worker/train/output_lock.h"
#include "worker/train/rank_metrics.h"
#include "worker/train/run_status.h"
#include "worker/train/trainer.h"

namespace {

std::string OneLine(const std::exception& e) {
  if (const auto* spec_error = dynamic_cast<const dpo::JobSpecError*>(&e)) {
    std::string text;
    for (const std::string& problem : spec_error->problems()) text += (text.empty() ? "" : "; ") + problem;
    return text;
  }
  std::string text = e.what();
  for (char& c : text) {
    if (c == '\n') c = ' ';
  }
  return text;
}

// Set by SIGTERM (mpirun forwards it to every rank; Slurm's --signal sends it before the time
// limit); training stops at the next step boundary that all ranks agree on.
volatile std::sig_atomic_t g_stop_requested = 0;

void RequestStop(int) { g_stop_requested = 1; }

// The handler below keeps a rank alive after SIGTERM until a step boundary, but a launcher tearing
// a failed job down (mpirun: SIGTERM, then SIGKILL, then it exits) must never leave a rank
// behind blocked in a collective: a rank of a multi-rank job dies with the process that
// started it (mpirun, orted, slurmstepd).
void DieWithLauncher(const dpo::MpiSession& mpi) {
  if (mpi.world_size() == 1) return;  // a lone worker may outlive whoever started it
  const pid_t launcher = ::getppid();
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != launcher) std::_Exit(1);  // it died before the line above
}

void InstallStopHandler() {
  struct sigaction action {};
  action.sa_handler = RequestStop;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
}

// Whether the job runs on CUDA here. model.device cuda plans for CUDA even on a machine without a
// GPU (the coordinator's host plans jobs for its workers); auto and cpu resolve as training does.
bool RunsOnCuda(const dpo::JobSpec& spec) {
  return spec.model.device == dpo::ModelSection::Device::kCuda ||
         dpo::ParseDevice(dpo::ToString(spec.model.device), "model.device").is_cuda();
}

// Prints the plan for `job_path` on the device training would use here (which resolves
// train.bf16's null).
void PrintPlan(const std::string& job_path, int64_t ranks, double gpu_memory_gib, bool json) {
  const dpo::JobSpec spec = dpo::LoadJobSpec(job_path);
  dpo::MemoryPlanOptions options;
  options.ranks = ranks;
  options.device_gib = gpu_memory_gib;
  options.gpu = RunsOnCuda(spec);
  const dpo::MemoryPlan plan = dpo::PlanMemoryForSpec(spec, options);
  std::fputs((json ? dpo::MemoryPlanJson(plan) : dpo::FormatMemoryPlan(plan)).c_str(), stdout);
}

}  // namespace

int main(int argc, char** argv) {
  // Before the parsing: MPI_Init may take its own arguments out of argv. Under mpirun every rank
  // parses, so bad usage exits 2 on each.
  dpo::MpiSession mpi(&argc, &argv);
  dpo::cli::App app(
      "Runs the DPO training job the spec describes (docs/job_spec.md): one process, or one\n"
      "rank per GPU or CPU process under mpirun. Metrics go to <output.dir>/metrics.jsonl.",
      "dpo-worker");
  std::string job_path, plan_path;
  int64_t ranks = 0;
  double gpu_memory_gib = 80;
  bool plan_json = false;
  CLI::Option_group* mode = app.add_option_group("mode", "what to run");
  mode->add_option("--job", job_path, "train the job this spec describes")->option_text("JOB.yaml");
  CLI::Option* plan = mode->add_option("--plan", plan_path,
                                       "print the memory per rank of each train.sharding mode on --ranks N ranks, and\n"
                                       "whether it fits a device of --gpu-memory GiB, without training\n"
                                       "(docs/memory_plan.md); reads only the model's config.json")
                          ->option_text("JOB.yaml");
  mode->require_option(1);
  CLI::Option* ranks_option = app.add_option("--ranks", ranks, "with --plan: the number of ranks to plan for")
                                  ->check(dpo::cli::Integer(1))
                                  ->needs(plan);
  plan->needs(ranks_option);
  app.add_option("--gpu-memory", gpu_memory_gib, "with --plan: GiB of memory per device")
      ->check(dpo::cli::Real(0, /*inclusive=*/false))
      ->capture_default_str()
      ->needs(plan);
  app.add_flag("--json", plan_json, "with --plan: print the plan as JSON, in bytes")->needs(plan);
  app.footer(
      "Exit status: 0 success; 1 failure, with a one-line reason on stderr; 2 bad usage;\n"
      "75 stopped by SIGTERM after a checkpoint; 76 a collective timed out.");
  if (const auto exit = dpo::cli::Parse(app, argc, argv)) return *exit;
  std::optional<dpo::JobSpec> spec;
  try {
    if (*plan) {
      PrintPlan(plan_path, ranks, gpu_memory_gib, plan_json);
      return dpo::cli::kExitOk;
    }
    spec.emplace(dpo::LoadJobSpec(job_path));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dpo-worker: error: %s\n", OneLine(e).c_str());
    // No status.json: without a valid spec there is no output directory to write it in.
    if (mpi.world_size() > 1) dpo::AbortAllRanks(dpo::cli::kExitFailure);
    return dpo::cli::kExitFailure;
  }
  DieWithLauncher(mpi);
  InstallStopHandler();
  const std::string& output_dir = spec->output.dir;
  dpo::RunStatusFile status(output_dir, mpi.rank());
  std::optional<dpo::OutputDirLock> lock;
  try {
    if (mpi.rank() == 0) {
      std::filesystem::create_directories(output_dir);
      lock.emplace(output_dir);
      // Saves killed midway (this directory's previous worker) left these; nobody else writes here.
      if (const int removed = dpo::RemoveCheckpointTemps(output_dir)) {
        std::fprintf(stderr, "removed %d unfinished checkpoint save(s) from %s\n", removed, output_dir.c_str());
      }
      dpo::WriteFileAtomically((std::filesystem::path(output_dir) / "job.yaml").string(), dpo::ToYaml(*spec));
      // A previous run's per-rank files (maybe of ranks this run does not have).
      dpo::RemoveRankMetrics(output_dir);
      status.Progress(0, 0, {});
    }
    // The other ranks touch nothing in the directory (heartbeats, status) before rank 0 holds it.
    mpi.Barrier();
    dpo::RankMetricsFile rank_metrics(output_dir, mpi.rank(), mpi.world_size());
    const c10::Device device = dpo::ParseDevice(dpo::ToString(spec->model.device), "model.device", mpi.local_rank());
    const bool cuda = device.is_cuda();
    const int device_index = cuda ? device.index() : 0;
    dpo::CollectiveTimeoutOptions timeout;
    timeout.seconds = spec->train.collective_timeout_seconds;
    timeout.heartbeat_dir = output_dir;
    timeout.on_failure = [&status](dpo::ErrorCode code, const std::string& reason, int suspect) {
      status.Finish(dpo::RunState::kFailed, code, reason, suspect >= 0 ? std::optional(suspect) : std::nullopt);
    };
    std::unique_ptr<dpo::ProcessGroup> group =
        cuda ? dpo::MakeNcclProcessGroup(device_index, timeout) : dpo::MakeMpiProcessGroup(timeout);
    dpo::TrainHooks hooks;
    hooks.on_progress = [&status](int64_t step, int64_t total, const std::map<std::string, double>& metrics) {
      status.Progress(step, total, metrics);
    };
    hooks.on_rank_metrics = [&rank_metrics](const dpo::RankMetrics& metrics) { rank_metrics.Write(metrics); };
    hooks.stop_requested = [] { return g_stop_requested != 0; };
    const dpo::TrainSummary summary = dpo::RunTraining(*spec, *group, mpi.local_rank(), hooks);
    if (summary.interrupted) {
      const std::string reason =
          "stopped by SIGTERM after step " + std::to_string(summary.steps) + "; checkpoint " + summary.last_checkpoint;
      if (group->rank() == 0) {
        status.Finish(dpo::RunState::kInterrupted, dpo::ErrorCode::kInterrupted, reason, std::nullopt);
        std::fprintf(stderr, "dpo-worker: %s\n", reason.c_str());
      }
      return dpo::InfoOf(dpo::ErrorCode::kInterrupted).exit_code;
    }
    if (group->rank() == 0) {
      status.Finish(dpo::RunState::kSucceeded, std::nullopt, "", std::nullopt);
      std::fprintf(stderr, "done: %lld steps (%lld skipped), last loss %.6f, checkpoint %s\n",
                   static_cast<long long>(summary.steps), static_cast<long long>(summary.skipped_steps),
                   summary.last_loss, summary.last_checkpoint.c_str());
    }
    return dpo::cli::kExitOk;
  } catch (const std::exception& e) {
    const std::string reason = OneLine(e);
    const auto* error = dynamic_cast<const dpo::Error*>(&e);
    const dpo::ErrorCode code = error != nullptr ? error->code() : dpo::ErrorCode::kInternal;
    std::fprintf(stderr, "dpo-worker: error: %s\n", reason.c_str());
    std::fflush(stderr);
    // This rank's own reason, before MPI_Abort ends the others. A worker refused the lock must
    // not touch the status of the worker that holds it.
    if (code != dpo::ErrorCode::kOutputLocked) {
      status.Finish(dpo::RunState::kFailed, code, reason, mpi.rank());
    }
    // A failing rank must not leave the others waiting in a collective.
    if (mpi.world_size() > 1) dpo::AbortAllRanks(dpo::InfoOf(code).exit_code);
    return dpo::InfoOf(code).exit_code;
  }
}
