// dpo-model-check: drives the model from the command line for the oracle tests and the GPU
// machine's precision check. One command (a CLI11 subcommand; `dpo-model-check CMD --help`):
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
//       Prints the bf16-vs-fp32 and device-vs-CPU table.
//
// Exit status (docs/cli.md): 0 success; 1 the command failed (a file that cannot be read, a
// missing tensor, a precision row out of tolerance); 2 bad usage.
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>

#include <torch/torch.h>

#include "common/model/checkpoint_io.h"
#include "common/model/precision_check.h"
#include "common/model/pretrained.h"
#include "common/util/cli.h"
#include "common/util/error.h"

namespace dpo {
namespace {

// The flags of every command; each command reads only its own.
struct Flags {
  std::string model, ids, out, config;
  std::string device = "cpu";
  std::string dtype;  // Default: "" = float32 for logits, the model's own dtype for save and init.
  std::string span_attention = "auto";
  bool checkpointing = false;
  uint64_t seed = 0;
  std::optional<int64_t> max_shard_bytes;  // Default: SaveOptions' own.
};

torch::ScalarType Dtype(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kFloat16;
  Fail("--dtype", "expected float32, bfloat16 or float16, got '" + name + "'");
}

SaveOptions SaveOptionsFrom(const Flags& flags) {
  SaveOptions options;
  if (!flags.dtype.empty()) options.dtype = Dtype(flags.dtype);
  if (flags.max_shard_bytes) options.max_shard_bytes = *flags.max_shard_bytes;
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
std::shared_ptr<CausalLM> LoadModel(const Flags& flags, torch::ScalarType dtype) {
  auto model = LoadPretrained(flags.model, dtype);
  model->SetActivationCheckpointing(flags.checkpointing);
  model->SetSpanAttention(SpanAttentionMode(flags.span_attention));
  return model;
}

int Logits(const Flags& flags) {
  auto model = LoadModel(flags, flags.dtype.empty() ? torch::kFloat32 : Dtype(flags.dtype));
  CheckpointReader file(flags.ids);
  ModelInputs in = ReadInputs(file);
  torch::NoGradGuard no_grad;
  torch::Tensor hidden = model->Hidden(in.ids, in.positions, in.spans);
  torch::Tensor logits = torch::linear(hidden, model->lm_head_weight());
  WriteTensors(flags.out, {{"logits", logits.to(torch::kFloat32)}, {"hidden", hidden.to(torch::kFloat32)}});
  return cli::kExitOk;
}

int Grads(const Flags& flags) {
  auto model = LoadModel(flags, torch::kFloat32);
  CheckpointReader file(flags.ids);
  ModelInputs in = ReadInputs(file);
  torch::Tensor labels = file.Read("labels", torch::kInt64);
  torch::Tensor mask = labels.ne(-100);
  torch::Tensor logits = torch::linear(model->Hidden(in.ids, in.positions, in.spans), model->lm_head_weight());
  torch::Tensor logps = torch::log_softmax(logits, -1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1);
  torch::Tensor loss = (logps * mask).sum();
  loss.backward();
  NamedTensors out{{"loss", loss.detach()}};
  for (const auto& p : model->named_parameters()) out.emplace_back(p.key(), p.value().grad());
  WriteTensors(flags.out, out);
  return cli::kExitOk;
}

int Save(const Flags& flags) {
  auto model = LoadPretrained(flags.model, torch::kFloat32);
  SaveOptions options = SaveOptionsFrom(flags);
  options.tokenizer_dir = flags.model;
  SavePretrained(*model, flags.out, options);
  return cli::kExitOk;
}

int Init(const Flags& flags) {
  ModelConfig config = ModelConfig::FromJsonFile(flags.config);
  auto model = RandomInit(config, flags.seed);
  SavePretrained(*model, flags.out, SaveOptionsFrom(flags));
  return cli::kExitOk;
}

int Precision(const Flags& flags) {
  torch::Device device(flags.device);
  if (device.is_cuda() && !torch::cuda::is_available()) Fail("--device", "CUDA is not available");
  auto rows = RunPrecisionChecks(device);
  std::fputs(FormatPrecisionTable(rows).c_str(), stdout);
  for (const auto& r : rows) {
    if (!r.pass()) return cli::kExitFailure;
  }
  return cli::kExitOk;
}

// --dtype on `command`; `fallback` names what its absence means.
void AddDtype(CLI::App& command, Flags& flags, const std::string& fallback) {
  command.add_option("--dtype", flags.dtype, "the weights' dtype (default: " + fallback + ")")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}));
}

// The flags of logits and grads: the model, its inputs and outputs, and how it runs.
void AddModelRun(CLI::App& command, Flags& flags, const std::string& out) {
  command.add_option("--model", flags.model, "a Hugging Face model directory")->type_name("DIR")->required();
  command
      .add_option("--ids", flags.ids,
                  "input_ids [B,T] int64, optional position_ids and spans [N,5] (row, offset,\n"
                  "length, prefix_offset, prefix_length) for packed rows")
      ->type_name("IN.safetensors")
      ->required();
  command.add_option("--out", flags.out, out)->type_name("OUT.safetensors")->required();
  command.add_flag("--checkpointing", flags.checkpointing, "activation checkpointing per layer");
  command.add_option("--span-attention", flags.span_attention, "the attention of packed rows' spans")
      ->check(CLI::IsMember({"auto", "per-span", "mask"}))
      ->capture_default_str();
}

// The flags of save and init: where and how the model is written.
void AddSave(CLI::App& command, Flags& flags) {
  command.add_option("--out", flags.out, "the model directory written")->type_name("DIR")->required();
  AddDtype(command, flags, "the model's own");
  command
      .add_option("--max-shard-bytes", flags.max_shard_bytes,
                  "above this many bytes of weights, shard the checkpoint (default 5 GiB)")
      ->type_name("N")
      ->check(cli::Integer(1, std::numeric_limits<int64_t>::max()));
}

int Main(int argc, char** argv) {
  dpo::cli::App app(
      "Drives the model from the command line for the oracle tests and the GPU machine's\n"
      "precision check.",
      "dpo-model-check");
  app.require_subcommand(1);
  Flags flags;
  CLI::App* logits = app.add_subcommand("logits", "writes \"logits\" [B,T,V] and \"hidden\" [B,T,H] as float32");
  AddModelRun(*logits, flags, "gets logits and hidden");
  AddDtype(*logits, flags, "float32");
  CLI::App* grads =
      app.add_subcommand("grads",
                         "writes \"loss\" = the sum of log p(label) over IN's \"labels\" [B,T] (-100 = ignored),\n"
                         "and every parameter's gradient of it, by its HF name");
  AddModelRun(*grads, flags, "gets loss and the gradients");
  CLI::App* save = app.add_subcommand("save", "loads and saves again (tokenizer files copied from the source)");
  save->add_option("--model", flags.model, "a Hugging Face model directory")->type_name("DIR")->required();
  AddSave(*save, flags);
  CLI::App* init = app.add_subcommand("init", "saves a randomly initialized model");
  init->add_option("--config", flags.config, "the model's config.json")->type_name("FILE")->required();
  init->add_option("--seed", flags.seed, "the initialization's seed")
      ->type_name("N")
      ->check(cli::Integer(0, std::numeric_limits<int64_t>::max()))
      ->required();
  AddSave(*init, flags);
  CLI::App* precision = app.add_subcommand("precision", "prints the bf16-vs-fp32 and device-vs-CPU table");
  precision->add_option("--device", flags.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.footer(
      "Exit status: 0 success; 1 the command failed (a file that cannot be read, a missing\n"
      "tensor, a precision row out of tolerance); 2 bad usage. `dpo-model-check CMD --help`\n"
      "lists a command's flags.");
  if (const auto exit = cli::Parse(app, argc, argv)) return *exit;
  if (*logits) return Logits(flags);
  if (*grads) return Grads(flags);
  if (*save) return Save(flags);
  if (*init) return Init(flags);
  return Precision(flags);
}

}  // namespace
}  // namespace dpo

int main(int argc, char** argv) {
  try {
    return dpo::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dpo-model-check: %s\n", e.what());
    return dpo::cli::kExitFailure;
  }
}
