// dpo-worker --job JOB.yaml
// Runs one DPO training job: one process, or one rank per GPU/CPU process under mpirun.
// Exit status 0 on success; otherwise 1 with a one-line reason on stderr.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include <torch/torch.h>

#include "common/config/job_spec.h"
#include "common/model/safetensors.h"
#include "common/util/error.h"
#include "worker/comm/process_group.h"
#include "worker/train/trainer.h"

namespace {

constexpr const char* kUsage =
    "usage: dpo-worker --job JOB.yaml\n"
    "Runs the DPO training job the spec describes (docs/job_spec.md); under mpirun, one rank\n"
    "per GPU or CPU process. Metrics go to <output.dir>/metrics.jsonl.\n";

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

}  // namespace

int main(int argc, char** argv) {
  dpo::MpiSession mpi(&argc, &argv);
  std::string job_path;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--job") == 0 && i + 1 < argc) {
      job_path = argv[++i];
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "dpo-worker: unknown argument \"%s\"\n%s", argv[i], kUsage);
      return 2;
    }
  }
  if (job_path.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  try {
    const dpo::JobSpec spec = dpo::LoadJobSpec(job_path);
    const bool cuda = spec.model.device == dpo::ModelSection::Device::kCuda ||
                      (spec.model.device == dpo::ModelSection::Device::kAuto &&
                       torch::cuda::is_available());
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
