#include "common/model/pretrained.h"

#include <sstream>

#include <torch/torch.h>

#include "common/model/checkpoint_io.h"
#include "common/tensor/device.h"
#include "common/util/atomic_file.h"
#include "common/util/error.h"
#include "common/util/path_util.h"

namespace dpo {
namespace {

// Old checkpoints store RoPE tables; they are derived from config.json, never loaded.
bool IsIgnorableExtra(const std::string& name, const ModelConfig& config) {
  const std::string rope = "rotary_emb.inv_freq";
  if (name.size() >= rope.size() && name.compare(name.size() - rope.size(), rope.size(), rope) == 0) {
    return true;
  }
  return config.tie_word_embeddings && name == "lm_head.weight";
}

}  // namespace

std::shared_ptr<CausalLM> LoadPretrained(const std::string& dir, torch::ScalarType dtype, const torch::Device& device) {
  UnloadedPretrained opened = OpenPretrained(dir, dtype, device);
  torch::NoGradGuard no_grad;
  for (auto& item : opened.model->named_parameters()) {
    item.value().copy_(opened.weights->Read(item.key(), dtype, device));
  }
  return opened.model;
}

UnloadedPretrained OpenPretrained(const std::string& dir, torch::ScalarType dtype, const torch::Device& device) {
  DtypeName(dtype);  // rejects non-float model dtypes early
  ModelConfig config = ModelConfig::FromJsonFile(JoinPath(dir, "config.json"));
  auto reader = std::make_shared<CheckpointReader>(dir);
  auto model = std::make_shared<CausalLM>(config, torch::TensorOptions().dtype(dtype).device(device));
  auto params = model->named_parameters();
  for (auto& item : params) {
    const std::string& name = item.key();
    if (reader->Shape(name) != item.value().sizes().vec()) {
      std::ostringstream msg;
      msg << "tensor '" << name << "' has shape " << c10::IntArrayRef(reader->Shape(name))
          << " in the checkpoint but the config implies " << item.value().sizes();
      Fail(dir, msg.str());
    }
  }
  for (const auto& name : reader->TensorNames()) {
    if (params.find(name) == nullptr && !IsIgnorableExtra(name, config)) {
      Fail(dir, "tensor '" + name + "' in the checkpoint is not a parameter of this " + config.model_type +
                    " config (config.json does not match the weights)");
    }
  }
  return {model, reader};
}

std::shared_ptr<CausalLM> RandomInit(const ModelConfig& config, uint64_t seed, torch::ScalarType dtype,
                                     const torch::Device& device) {
  auto model = std::make_shared<CausalLM>(config, torch::TensorOptions().dtype(dtype).device(device));
  model->InitWeights(seed);
  return model;
}

void SavePretrained(CausalLM& model, const std::string& dir, const SaveOptions& options) {
  torch::ScalarType dtype = options.dtype;
  if (dtype == torch::ScalarType::Undefined) dtype = model.lm_head_weight().scalar_type();
  DtypeName(dtype);  // refuses a dtype config.json cannot name before anything is written
  MakeDirectories(dir);
  NamedTensors tensors;
  for (const auto& item : model.named_parameters()) {
    tensors.emplace_back(item.key(), item.value().detach().to(torch::kCPU, dtype));
  }
  WriteCheckpoint(dir, tensors, options.max_shard_bytes);
  WritePretrainedMetadata(model.config(), dtype, dir, options.tokenizer_dir);
}

void WritePretrainedMetadata(const ModelConfig& config, torch::ScalarType dtype, const std::string& dir,
                             const std::string& tokenizer_dir) {
  WriteFileAtomically(JoinPath(dir, "config.json"), config.ToJson(DtypeName(dtype)));
  if (tokenizer_dir.empty()) return;
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
    const std::string source = JoinPath(tokenizer_dir, file);
    if (!PathExists(source)) continue;
    // Read fully before writing, so saving into the source directory rewrites the same bytes.
    WriteFileAtomically(JoinPath(dir, file), ReadWholeFile(source));
  }
}

}  // namespace dpo
