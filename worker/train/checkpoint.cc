#include "worker/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include <torch/torch.h>

#include "common/model/causal_lm.h"
#include "common/model/checkpoint_io.h"
#include "common/model/pretrained.h"
#include "common/util/atomic_file.h"
#include "common/util/error.h"
#include "common/util/mapped_file.h"
#include "common/util/path_util.h"

namespace fs = std::filesystem;

namespace dpo {
namespace {

constexpr const char* kPrefix = "checkpoint-";

// Step number of a complete checkpoint directory name, or -1.
int64_t CheckpointStep(const std::string& name) {
  static const std::regex pattern("checkpoint-([0-9]{1,18})");
  std::smatch match;
  if (!std::regex_match(name, match, pattern)) return -1;
  return std::stoll(match[1]);
}

void FsyncPath(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(path.string(), "cannot open to fsync");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) Fail(path.string(), "fsync failed");
}

// fsyncs every file and directory below root, then root.
void FsyncTree(const fs::path& root) {
  for (const auto& entry : fs::recursive_directory_iterator(root)) FsyncPath(entry.path());
  FsyncPath(root);
}

void CheckFinite(CausalLM& model) {
  torch::NoGradGuard no_grad;
  for (const auto& item : model.named_parameters()) {
    if (!torch::isfinite(item.value()).all().item<bool>()) {
      Fail("checkpoint", "parameter \"" + item.key() + "\" is not finite; refusing to save");
    }
  }
}

}  // namespace

std::string TrainerState::ToJson() const {
  nlohmann::json j = {{"global_step", global_step},
                      {"epoch", epoch},
                      {"batch_in_epoch", batch_in_epoch},
                      {"skipped_steps", skipped_steps},
                      {"consecutive_bad_steps", consecutive_bad_steps},
                      {"rng_state_hex", rng_state_hex},
                      {"job_spec_yaml", job_spec_yaml}};
  return j.dump(2) + "\n";
}

TrainerState TrainerState::FromJson(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    Fail(source, std::string("not JSON: ") + e.what());
  }
  TrainerState state;
  auto read = [&](const char* key, auto& into) {
    if (!j.contains(key)) Fail(source, std::string(key) + ": missing");
    try {
      j.at(key).get_to(into);
    } catch (const nlohmann::json::exception&) {
      Fail(source, std::string(key) + ": wrong type");
    }
  };
  read("global_step", state.global_step);
  read("epoch", state.epoch);
  read("batch_in_epoch", state.batch_in_epoch);
  read("skipped_steps", state.skipped_steps);
  read("consecutive_bad_steps", state.consecutive_bad_steps);
  read("rng_state_hex", state.rng_state_hex);
  read("job_spec_yaml", state.job_spec_yaml);
  return state;
}

CheckpointPaths::CheckpointPaths(const std::string& checkpoint_dir)
    : dir(checkpoint_dir),
      model_dir((fs::path(checkpoint_dir) / "model").string()),
      optimizer_file((fs::path(checkpoint_dir) / "optimizer.safetensors").string()),
      state_file((fs::path(checkpoint_dir) / "trainer_state.json").string()) {}

std::string SaveCheckpoint(const std::string& output_dir, CausalLM& model,
                           const std::map<std::string, at::Tensor>& optimizer_state, const TrainerState& state,
                           const std::string& tokenizer_dir) {
  CheckFinite(model);
  const std::string temp_dir = CheckpointTempDir(output_dir, state.global_step, ::getpid());
  CheckpointPaths paths(temp_dir);
  SaveOptions save_options;
  save_options.tokenizer_dir = tokenizer_dir;
  SavePretrained(model, paths.model_dir, save_options);
  WriteTensors(paths.optimizer_file, NamedTensors(optimizer_state.begin(), optimizer_state.end()));
  WriteFileAtomically(paths.state_file, state.ToJson());
  return CommitCheckpoint(temp_dir, output_dir, state.global_step);
}

std::string CheckpointTempDir(const std::string& output_dir, int64_t step, int64_t writer_id) {
  const fs::path temp_dir =
      fs::path(output_dir) / (".tmp-" + std::string(kPrefix) + std::to_string(step) + "-" + std::to_string(writer_id));
  RemoveTree(temp_dir.string());
  fs::create_directories(temp_dir);
  return temp_dir.string();
}

std::string CommitCheckpoint(const std::string& temp_dir, const std::string& output_dir, int64_t step) {
  const fs::path final_dir = fs::path(output_dir) / (kPrefix + std::to_string(step));
  FsyncTree(temp_dir);
  // Replacing an existing checkpoint of the same step (a re-run): remove it first, since
  // rename() cannot replace a non-empty directory. (RemoveTree, not std::filesystem::remove_all,
  // which crashes in binaries linked with libtorch's own copy of it.)
  RemoveTree(final_dir.string());
  fs::rename(temp_dir, final_dir);
  FsyncPath(output_dir);
  return final_dir.string();
}

int RemoveCheckpointTemps(const std::string& output_dir) {
  const std::string prefix = ".tmp-" + std::string(kPrefix);
  std::vector<fs::path> temps;
  for (const auto& entry : fs::directory_iterator(output_dir)) {
    if (entry.path().filename().string().starts_with(prefix)) temps.push_back(entry.path());
  }
  for (const fs::path& temp : temps) RemoveTree(temp.string());
  return static_cast<int>(temps.size());
}

LoadedCheckpoint LoadCheckpoint(const std::string& checkpoint_dir, CausalLM& model) {
  CheckpointPaths paths(checkpoint_dir);
  LoadedCheckpoint loaded;
  loaded.state = LoadTrainerState(checkpoint_dir);
  torch::NoGradGuard no_grad;
  CheckpointReader weights(paths.model_dir);
  for (auto& item : model.named_parameters()) {
    at::Tensor& param = item.value();
    // Exactly the parameter's shape, and its dtype or fp32 (a sharded run stores its fp32
    // masters): copy_ would broadcast a [1] tensor into any shape and round any dtype, so a
    // mismatched checkpoint would resume silently wrong.
    const std::vector<int64_t> shape = weights.Shape(item.key());
    const torch::ScalarType stored = weights.StoredDtype(item.key());
    if (shape != param.sizes().vec() || (stored != param.scalar_type() && stored != torch::kFloat32)) {
      Fail(weights.FileOf(item.key()),
           "tensor '" + item.key() + "' is " + c10::toString(stored) + " " + c10::str(c10::IntArrayRef(shape)) +
               " in the checkpoint, but the model's parameter is " + c10::toString(param.scalar_type()) + " " +
               c10::str(param.sizes()) + "; refusing to resume from it",
           ErrorCode::kBadModel);
    }
    param.copy_(weights.Read(item.key(), stored, param.device()));
  }
  if (!PathExists(paths.optimizer_file)) return loaded;  // a sharded run's checkpoint
  CheckpointReader optimizer(paths.optimizer_file);
  const c10::Device device = model.lm_head_weight().device();
  for (const std::string& name : optimizer.TensorNames()) {
    loaded.optimizer_state[name] = optimizer.Read(name, torch::kFloat, device);
  }
  return loaded;
}

TrainerState LoadTrainerState(const std::string& checkpoint_dir) {
  const CheckpointPaths paths(checkpoint_dir);
  MappedFile state_file(paths.state_file);
  return TrainerState::FromJson(std::string(state_file.view()), paths.state_file);
}

std::vector<std::string> ListCheckpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  if (!fs::is_directory(output_dir)) return {};
  for (const auto& entry : fs::directory_iterator(output_dir)) {
    const int64_t step = CheckpointStep(entry.path().filename().string());
    if (step >= 0 && entry.is_directory()) found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> dirs;
  for (auto& [step, dir] : found) dirs.push_back(std::move(dir));
  return dirs;
}

void PruneCheckpoints(const std::string& output_dir, int64_t keep) {
  std::vector<std::string> dirs = ListCheckpoints(output_dir);
  for (size_t i = 0; i + keep < dirs.size() && keep >= 0; ++i) RemoveTree(dirs[i]);
}

std::optional<std::string> ResolveCheckpoint(const std::string& spec_value, const std::string& output_dir) {
  if (spec_value == "latest") {
    std::vector<std::string> dirs = ListCheckpoints(output_dir);
    if (dirs.empty()) return std::nullopt;
    return dirs.back();
  }
  if (!fs::is_regular_file(CheckpointPaths(spec_value).state_file)) {
    Fail("output.resume_from_checkpoint",
         "\"" + spec_value + "\" is not a complete checkpoint (no trainer_state.json)");
  }
  return spec_value;
}

}  // namespace dpo
