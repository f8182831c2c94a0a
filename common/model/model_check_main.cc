// dpo-model-check: drives the model from the command line for the oracle tests and the GPU
// machine's precision check.
//
//   dpo-model-check logits --model DIR --ids IN.safetensors --out OUT.safetensors
//                          [--dtype float32|bfloat16|float16] [--checkpointing]
//                          [--span-attention auto|per-span|mask]
//       IN holds "input_ids" [B,T] int64 and optionally "position_ids" and "spans" [N,5] int64,
//       one AttentionSpan per line (row, offset, length, prefix_offset, prefix_length) for packed
//       rows; OUT gets "logits" [B,T,V] and "hidden" [B,T,H] as float32.
//   dpo-model-check grads --model DIR --ids IN.safetensors --out OUT.safetensors [--checkpointing]
//                         [--span-attention M]
//       IN also holds "labels" [B,T] int64 (-100 = ignored). loss = sum of log p(label) over the
//       other positions; OUT gets "loss" and the gradient of every parameter, by its HF name.
//   dpo-model-check save --model DIR --out DIR [--dtype D] [--max-shard-bytes N]
//       Loads and saves again (tokenizer files copied from the source directory).
//   dpo-model-check init --config config.json --seed N --out DIR [--dtype D] [--max-shard-bytes N]
//       Saves a randomly initialized model.
//   dpo-model-check precision [--device cpu|cuda|cuda:N]
//       Prints the bf16-vs-fp32 and device-vs-CPU table; exit status 1 if a row fails.
#include <cstdio>
#include <map>
#include <string>

#include <torch/torch.h>

#include "common/model/checkpoint_io.h"
#include "common/model/precision_check.h"
#include "common/model/pretrained.h"
#include "common/util/error.h"

namespace dpo {
namespace {

class Args {
 public:
  Args(int argc, char** argv) {
    for (int i = 2; i < argc; ++i) {
      std::string key = argv[i];
      if (key.rfind("--", 0) != 0) Fail("arguments", "unexpected '" + key + "'");
      if (key == "--checkpointing") {
        values_[key] = "1";
      } else {
        if (i + 1 >= argc) Fail("arguments", key + " needs a value");
        values_[key] = argv[++i];
      }
    }
  }
  std::string Get(const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end()) Fail("arguments", "missing " + key);
    return it->second;
  }
  std::string Get(const std::string& key, const std::string& fallback) const {
    auto it = values_.find(key);
    return it == values_.end() ? fallback : it->second;
  }
  bool Has(const std::string& key) const { return values_.count(key) != 0; }

 private:
  std::map<std::string, std::string> values_;
};

torch::ScalarType Dtype(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kFloat16;
  Fail("--dtype", "expected float32, bfloat16 or float16, got '" + name + "'");
}

SaveOptions SaveOptionsFrom(const Args& args) {
  SaveOptions options;
  if (args.Has("--dtype")) options.dtype = Dtype(args.Get("--dtype"));
  if (args.Has("--max-shard-bytes"))
    options.max_shard_bytes = std::stoll(args.Get("--max-shard-bytes"));
  return options;
}

CausalLM::SpanAttention SpanAttentionMode(const std::string& name) {
  if (name == "auto") return CausalLM::SpanAttention::kAuto;
  if (name == "per-span") return CausalLM::SpanAttention::kPerSpan;
  if (name == "mask") return CausalLM::SpanAttention::kMask;
  Fail("--span-attention", "expected auto, per-span or mask, got '" + name + "'");
}

// The model inputs of IN: input_ids, and position_ids and spans when present.
struct ModelInputs {
  torch::Tensor ids, positions;
  std::vector<AttentionSpan> spans;
};

ModelInputs ReadInputs(const CheckpointReader& file) {
  ModelInputs in;
  in.ids = file.Read("input_ids", torch::kInt64);
  if (file.Contains("position_ids")) in.positions = file.Read("position_ids", torch::kInt64);
  if (!file.Contains("spans")) return in;
  torch::Tensor spans = file.Read("spans", torch::kInt64);
  if (spans.dim() != 2 || spans.size(1) != 5) Fail("spans", "must be [N, 5] int64");
  auto rows = spans.accessor<int64_t, 2>();
  for (int64_t i = 0; i < spans.size(0); ++i) {
    in.spans.push_back({rows[i][0], rows[i][1], rows[i][2], rows[i][3], rows[i][4]});
  }
  return in;
}

// The model of --model in `dtype`, set up as --checkpointing and --span-attention say.
std::shared_ptr<CausalLM> LoadModel(const Args& args, torch::ScalarType dtype) {
  auto model = LoadPretrained(args.Get("--model"), dtype);
  model->SetActivationCheckpointing(args.Has("--checkpointing"));
  model->SetSpanAttention(SpanAttentionMode(args.Get("--span-attention", "auto")));
  return model;
}

int Logits(const Args& args) {
  auto model = LoadModel(args, Dtype(args.Get("--dtype", "float32")));
  CheckpointReader file(args.Get("--ids"));
  ModelInputs in = ReadInputs(file);
  torch::NoGradGuard no_grad;
  torch::Tensor hidden = model->Hidden(in.ids, in.positions, in.spans);
  torch::Tensor logits = torch::linear(hidden, model->lm_head_weight());
  WriteTensors(args.Get("--out"),
               {{"logits", logits.to(torch::kFloat32)}, {"hidden", hidden.to(torch::kFloat32)}});
  return 0;
}

int Grads(const Args& args) {
  auto model = LoadModel(args, torch::kFloat32);
  CheckpointReader file(args.Get("--ids"));
  ModelInputs in = ReadInputs(file);
  torch::Tensor labels = file.Read("labels", torch::kInt64);
  torch::Tensor mask = labels.ne(-100);
  torch::Tensor logits =
      torch::linear(model->Hidden(in.ids, in.positions, in.spans), model->lm_head_weight());
  torch::Tensor logps = torch::log_softmax(logits, -1)
                            .gather(-1, labels.clamp_min(0).unsqueeze(-1))
                            .squeeze(-1);
  torch::Tensor loss = (logps * mask).sum();
  loss.backward();
  NamedTensors out{{"loss", loss.detach()}};
  for (const auto& p : model->named_parameters()) out.emplace_back(p.key(), p.value().grad());
  WriteTensors(args.Get("--out"), out);
  return 0;
}

int Save(const Args& args) {
  const std::string source = args.Get("--model");
  auto model = LoadPretrained(source, torch::kFloat32);
  SaveOptions options = SaveOptionsFrom(args);
  options.tokenizer_dir = source;
  SavePretrained(*model, args.Get("--out"), options);
  return 0;
}

int Init(const Args& args) {
  ModelConfig config = ModelConfig::FromJsonFile(args.Get("--config"));
  auto model = RandomInit(config, std::stoull(args.Get("--seed")));
  SavePretrained(*model, args.Get("--out"), SaveOptionsFrom(args));
  return 0;
}

int Precision(const Args& args) {
  std::string name = args.Get("--device", "cpu");
  torch::Device device(name);
  if (device.is_cuda() && !torch::cuda::is_available()) Fail("--device", "CUDA is not available");
  auto rows = RunPrecisionChecks(device);
  std::fputs(FormatPrecisionTable(rows).c_str(), stdout);
  for (const auto& r : rows) {
    if (!r.pass()) return 1;
  }
  return 0;
}

int Main(int argc, char** argv) {
  if (argc < 2) Fail("usage", "dpo-model-check logits|save|init|precision [--flag value ...]");
  const std::string command = argv[1];
  Args args(argc, argv);
  if (command == "logits") return Logits(args);
  if (command == "grads") return Grads(args);
  if (command == "save") return Save(args);
  if (command == "init") return Init(args);
  if (command == "precision") return Precision(args);
  Fail("usage", "unknown command '" + command + "'");
}

}  // namespace
}  // namespace dpo

int main(int argc, char** argv) {
  try {
    return dpo::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dpo-model-check: %s\n", e.what());
    return 2;
  }
}
