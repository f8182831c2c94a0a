// dpo-eval --policy DIR [--reference DIR] --data FILE [--beta B] --output FILE.jsonl
//
// Scores held-out preference pairs with a trained policy's implicit DPO reward, as RewardBench
// does for DPO models: reward = beta * (log pi(y|x) - log pi_ref(y|x)) per completion. Writes one
// JSON line per kept pair ("index": its place among the kept pairs; "line": the 1-based line of
// the input it came from, which differs once a pair is dropped as too long) and prints a summary
// (accuracy = share of pairs whose chosen reward is higher, mean margin) as one JSON object on
// stdout. Without --reference the reward is
// reference-free (beta * log pi). Exit status 0 on success, else 1 with a one-line reason: among
// them a data file with no pairs, a tokenizer with ids past the model's vocab_size, non-finite
// weights, and a non-finite score (never written as null).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/data/prepared_dataset.h"
#include "common/model/causal_lm.h"
#include "common/model/model_config.h"
#include "common/model/pretrained.h"
#include "common/tensor/device.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/error.h"
#include "worker/train/dpo_forward.h"
#include "worker/train/pair_batch.h"

namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage =
    "usage: dpo-eval --policy DIR [--reference DIR] --data FILE [--beta B] --output FILE.jsonl\n"
    "                [--tokenizer PATH] [--max-length N] [--batch-size N] [--device D] [--dtype T]\n"
    "Scores preference pairs (.jsonl/.jsonl.gz, TRL formats) by the implicit DPO reward.\n"
    "  --beta B         reward scale (default 0.1, TRL's)\n"
    "  --tokenizer      default: the policy directory\n"
    "  --max-length N   tokens per prompt+completion (default 1024, TRL's); 0 = no limit\n"
    "  --batch-size N   pairs per forward pass (default 8)\n"
    "  --implicit-prompt R  assistant_turn | common_prefix: where {chosen, rejected} text\n"
    "                   pairs split into prompt and completions (default assistant_turn)\n"
    "  --device D       cpu, cuda, cuda:N or auto (default auto)\n"
    "  --dtype T        float32 or bfloat16 (default float32)\n";

struct Args {
  std::string policy, reference, data, output, tokenizer, device = "auto", dtype = "float32";
  double beta = 0.1;
  int64_t max_length = 1024, batch_size = 8;
  dpo::ImplicitPrompt implicit_prompt = dpo::ImplicitPrompt::kAssistantTurn;
};

Args ParseArgs(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) dpo::Fail(flag, "missing value");
    const std::string value = argv[++i];
    auto number = [&](const std::string& text) {
      try {
        size_t used = 0;
        double v = std::stod(text, &used);
        if (used != text.size()) throw std::invalid_argument(text);
        return v;
      } catch (const std::exception&) {
        dpo::Fail(flag, "expected a number, got \"" + text + "\"");
      }
    };
    if (flag == "--policy") args.policy = value;
    else if (flag == "--reference") args.reference = value;
    else if (flag == "--data") args.data = value;
    else if (flag == "--output") args.output = value;
    else if (flag == "--tokenizer") args.tokenizer = value;
    else if (flag == "--device") args.device = value;
    else if (flag == "--dtype") args.dtype = value;
    else if (flag == "--beta") args.beta = number(value);
    else if (flag == "--max-length") args.max_length = static_cast<int64_t>(number(value));
    else if (flag == "--batch-size") args.batch_size = static_cast<int64_t>(number(value));
    else if (flag == "--implicit-prompt") args.implicit_prompt = dpo::ParseImplicitPrompt(value);
    else dpo::Fail(flag, "unknown flag");
  }
  if (args.policy.empty() || args.data.empty() || args.output.empty()) {
    dpo::Fail("arguments", "--policy, --data and --output are required");
  }
  if (args.beta <= 0) dpo::Fail("--beta", "must be > 0");
  if (args.batch_size <= 0) dpo::Fail("--batch-size", "must be > 0");
  if (args.tokenizer.empty()) args.tokenizer = args.policy;
  return args;
}

int Run(const Args& args) {
  const c10::Device device = dpo::ParseDevice(args.device, "--device");
  const c10::ScalarType dtype = dpo::ParseDtype(args.dtype, "--dtype");
  auto tokenizer = dpo::Tokenizer::Load(args.tokenizer);
  for (const std::string& dir : {args.policy, args.reference}) {
    if (dir.empty()) continue;
    const std::string config = (fs::path(dir) / "config.json").string();
    dpo::CheckVocabularyFits(*tokenizer, args.tokenizer, dpo::ModelConfig::FromJsonFile(config).vocab_size, config);
  }
  dpo::CollateOptions collate;
  collate.pad_id = tokenizer->pad_id().value_or(tokenizer->eos_id().value_or(0));
  collate.max_length = static_cast<size_t>(args.max_length);

  // Tokenize into a cache beside the output, reused while data, tokenizer and options agree.
  dpo::PrepareOptions prepare;
  prepare.tokenize.max_length = static_cast<size_t>(args.max_length);
  prepare.tokenize.implicit_prompt = args.implicit_prompt;
  const std::string prepared = args.output + ".prepared";
  dpo::PrepareResult result = dpo::PrepareDataset(*tokenizer, args.data, prepared, prepare);
  std::fprintf(stderr, "%s\n", result.report.Summary().c_str());
  dpo::RequirePairs(result, args.data);
  dpo::PreparedDataset dataset(prepared);

  auto policy = dpo::LoadPretrained(args.policy, dtype, device);
  policy->eval();
  std::shared_ptr<dpo::CausalLM> reference;
  if (!args.reference.empty()) {
    reference = dpo::LoadPretrained(args.reference, dtype, device);
    reference->eval();
  }

  std::ofstream out(args.output);
  if (!out) dpo::Fail(args.output, "cannot open for writing");
  torch::NoGradGuard no_grad;
  const dpo::SequenceLogpsOptions logps_options;
  int64_t pairs = 0, accurate = 0;
  double margin_sum = 0;
  std::vector<uint32_t> indices(dataset.size());
  for (uint32_t i = 0; i < indices.size(); ++i) indices[i] = i;
  for (size_t start = 0; start < indices.size(); start += static_cast<size_t>(args.batch_size)) {
    const size_t count = std::min(indices.size() - start, static_cast<size_t>(args.batch_size));
    dpo::PairBatch batch =
        dpo::MakePairBatch(dataset, std::span(indices).subspan(start, count), collate, device,
                           /*packed=*/true);
    dpo::ReferenceLogps pol = dpo::ReferenceForward(*policy, batch, logps_options, std::nullopt);
    dpo::ReferenceLogps ref{torch::zeros_like(pol.chosen), torch::zeros_like(pol.rejected)};
    if (reference) ref = dpo::ReferenceForward(*reference, batch, logps_options, std::nullopt);
    at::Tensor values = torch::stack({pol.chosen, pol.rejected, ref.chosen, ref.rejected})
                            .to(torch::kCPU, torch::kFloat64);
    auto v = values.accessor<double, 2>();
    for (int64_t b = 0; b < batch.pairs; ++b) {
      // A score JSON cannot hold (it would be written as null) means the model is broken.
      if (!std::isfinite(v[0][b]) || !std::isfinite(v[1][b]) || !std::isfinite(v[2][b]) ||
          !std::isfinite(v[3][b])) {
        dpo::Fail(args.data + ":" + std::to_string(dataset.source_line(start + b)),
                  "non-finite log-probability (policy chosen/rejected " + std::to_string(v[0][b]) + "/" +
                      std::to_string(v[1][b]) + ", reference " + std::to_string(v[2][b]) + "/" +
                      std::to_string(v[3][b]) + "); the model's outputs overflow",
                  dpo::ErrorCode::kBadModel);
      }
      const double reward_chosen = args.beta * (v[0][b] - v[2][b]);
      const double reward_rejected = args.beta * (v[1][b] - v[3][b]);
      nlohmann::json line = {{"index", start + b},
                             {"line", dataset.source_line(start + b)},
                             {"policy_chosen_logps", v[0][b]},
                             {"policy_rejected_logps", v[1][b]},
                             {"reference_chosen_logps", reference ? nlohmann::json(v[2][b]) : nlohmann::json(nullptr)},
                             {"reference_rejected_logps", reference ? nlohmann::json(v[3][b]) : nlohmann::json(nullptr)},
                             {"reward_chosen", reward_chosen},
                             {"reward_rejected", reward_rejected}};
      out << line.dump() << "\n";
      ++pairs;
      accurate += reward_chosen > reward_rejected ? 1 : 0;
      margin_sum += reward_chosen - reward_rejected;
    }
  }
  out.close();
  if (!out) dpo::Fail(args.output, "write failed");
  nlohmann::json summary = {{"pairs", pairs},
                            {"accuracy", pairs ? static_cast<double>(accurate) / pairs : 0.0},
                            {"mean_margin", pairs ? margin_sum / pairs : 0.0},
                            {"beta", args.beta},
                            {"reference_free", !reference},
                            {"skipped_lines", result.report.skipped},
                            {"dropped_pairs", result.report.dropped}};
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(ParseArgs(argc, argv));
  } catch (const std::exception& e) {
    std::string text = e.what();
    for (char& c : text) {
      if (c == '\n') c = ' ';
    }
    std::fprintf(stderr, "dpo-eval: error: %s\n", text.c_str());
    return 1;
  }
}
