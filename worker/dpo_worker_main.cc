// dpo-worker --job JOB.yaml
// Runs one DPO training job: one process, or one rank per GPU/CPU process under mpirun.
// Exit status 0 on success; otherwise 1 with a one-line reason on stderr.
//
// dpo-worker --plan JOB.yaml --ranks N [--gpu-memory GiB]
// Prints the memory one rank would need in each train.sharding mode (common/config/
// memory_plan.h) and exits: no collectives, no weights, only the model's config.json.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include <torch/torch.h>

#include "common/config/job_spec.h"
#include "common/config/memory_plan.h"
#include "common/model/safetensors.h"
#include "common/util/error.h"
#include "worker/comm/process_group.h"
#include "worker/train/trainer.h"

namespace {

constexpr const char* kUsage =
    "usage: dpo-worker --job JOB.yaml\n"
    "       dpo-worker --plan JOB.yaml --ranks N [--gpu-memory GiB] [--json]\n"
    "Runs the DPO training job the spec describes (docs/job_spec.md); under mpirun, one rank\n"
    "per GPU or CPU process. Metrics go to <output.dir>/metrics.jsonl.\n"
    "--plan prints the memory per rank of each train.sharding mode on N ranks, and whether it\n"
    "fits a device of --gpu-memory GiB (default 80), without training (docs/memory_plan.md);\n"
    "--json prints it as JSON, in bytes.\n";

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

// model.device resolved: auto is CUDA when a GPU is visible.
bool RunsOnCuda(const dpo::JobSpec& spec) {
  return spec.model.device == dpo::ModelSection::Device::kCuda ||
         (spec.model.device == dpo::ModelSection::Device::kAuto && torch::cuda::is_available());
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
  dpo::MpiSession mpi(&argc, &argv);
  std::string job_path, plan_path, ranks_text, gpu_memory_text;
  bool plan_json = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--job") == 0 && i + 1 < argc) {
      job_path = argv[++i];
    } else if (std::strcmp(argv[i], "--plan") == 0 && i + 1 < argc) {
      plan_path = argv[++i];
    } else if (std::strcmp(argv[i], "--ranks") == 0 && i + 1 < argc) {
      ranks_text = argv[++i];
    } else if (std::strcmp(argv[i], "--gpu-memory") == 0 && i + 1 < argc) {
      gpu_memory_text = argv[++i];
    } else if (std::strcmp(argv[i], "--json") == 0) {
      plan_json = true;
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "dpo-worker: unknown argument \"%s\"\n%s", argv[i], kUsage);
      return 2;
    }
  }
  // --plan's numbers, strictly: "2x" must not plan for 2 ranks.
  const auto ranks = dpo::ParseRanks(ranks_text);
  const auto gpu_memory = dpo::ParseGib(gpu_memory_text.empty() ? "80" : gpu_memory_text);
  std::string problem;
  if (plan_path.empty()) {
    if (!ranks_text.empty() || !gpu_memory_text.empty() || plan_json) {
      problem = "--ranks, --gpu-memory and --json go with --plan";
    }
  } else if (!job_path.empty()) {
    problem = "--plan and --job exclude each other";
  } else if (ranks_text.empty()) {
    problem = "--plan needs --ranks N";
  } else if (!ranks) {
    problem = "--ranks: expected an integer > 0, got \"" + ranks_text + "\"";
  } else if (!gpu_memory) {
    problem = "--gpu-memory: expected GiB > 0, got \"" + gpu_memory_text + "\"";
  }
  if (!problem.empty()) {
    std::fprintf(stderr, "dpo-worker: %s\n%s", problem.c_str(), kUsage);
    return 2;
  }
  if (job_path.empty() && plan_path.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  try {
    if (!plan_path.empty()) {
      PrintPlan(plan_path, *ranks, *gpu_memory, plan_json);
      return 0;
    }
    const dpo::JobSpec spec = dpo::LoadJobSpec(job_path);
    const bool cuda = RunsOnCuda(spec);
    const int device_index = cuda ? mpi.local_rank() % std::max<int>(1, torch::cuda::device_count()) : 0;
    std::unique_ptr<dpo::ProcessGroup> group =
        cuda ? dpo::MakeNcclProcessGroup(device_index) : dpo::MakeMpiProcessGroup();
    if (group->rank() == 0) {
      std::filesystem::create_directories(spec.output.dir);
      dpo::WriteFileAtomically((std::filesystem::path(spec.output.dir) / "job.yaml").string(),
                               dpo::ToYaml(spec));
    }
    const dpo::TrainSummary summary = dpo::RunTraining(spec, *group, mpi.local_rank());
    if (group->rank() == 0) {
      std::fprintf(stderr, "done: %lld steps (%lld skipped), last loss %.6f, checkpoint %s\n",
                   static_cast<long long>(summary.steps), static_cast<long long>(summary.skipped_steps),
                   summary.last_loss, summary.last_checkpoint.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dpo-worker: error: %s\n", OneLine(e).c_str());
    std::fflush(stderr);
    // A failing rank must not leave the others waiting in a collective.
    if (mpi.world_size() > 1) dpo::AbortAllRanks(1);
    return 1;
  }
}
