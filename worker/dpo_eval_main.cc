// dpo-eval --policy DIR [--reference DIR] --data FILE [--beta B] --output FILE.jsonl
//          [--tokenizer PATH] [--max-length N] [--batch-size N] [--implicit-prompt R]
//          [--device D] [--dtype T]
//
// Scores held-out preference pairs with a trained policy's implicit DPO reward, as RewardBench
// does for DPO models: reward = beta * (log pi(y|x) - log pi_ref(y|x)) per completion. Writes one
// JSON line per kept pair ("index": its place among the kept pairs; "line": the 1-based line of
// the input it came from, which differs once a pair is dropped as too long) and prints a summary
// (accuracy = share of pairs whose chosen reward is higher, mean margin) as one JSON object on
// stdout. Without --reference the reward is reference-free (beta * log pi).
// Exit status (docs/cli.md): 0 on success; 1 with a one-line reason, among them a data file with
// no pairs, a tokenizer with ids past the model's vocab_size, non-finite weights, and a
// non-finite score (never written as null); 2 on bad usage.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include <torch/torch.h>

#include "common/config/model_config.h"
#include "common/data/prepared_dataset.h"
#include "common/model/causal_lm.h"
#include "common/model/pretrained.h"
#include "common/tensor/device.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/cli.h"
#include "common/util/error.h"
#include "worker/train/dpo_forward.h"
#include "worker/train/pair_batch.h"

namespace fs = std::filesystem;

namespace {

struct Args {
  std::string policy, reference, data, output, tokenizer, device = "auto", dtype = "float32",
                                                          implicit_prompt = "assistant_turn";
  double beta = 0.1;
  int64_t max_length = 1024, batch_size = 8;
};

// Fills `args` from the command line; the status to exit with when the program should not go on.
std::optional<int> ParseArgs(int argc, char** argv, Args& args) {
  dpo::cli::App app(
      "Scores preference pairs (.jsonl/.jsonl.gz, TRL formats) by the implicit DPO reward\n"
      "beta * (log pi(y|x) - log pi_ref(y|x)): one JSON line per pair in --output, a\n"
      "summary (accuracy, mean margin) as one JSON object on stdout.",
      "dpo-eval");
  app.add_option("--policy", args.policy, "the policy's model directory")->required()->option_text("DIR");
  app.add_option("--reference", args.reference,
                 "the reference model's directory (default: none, a\n"
                 "reference-free reward, beta * log pi)")
      ->option_text("DIR");
  app.add_option("--data", args.data, "the preference pairs")->required()->option_text("FILE");
  app.add_option("--output", args.output, "where the per-pair JSON lines go")->required()->option_text("FILE.jsonl");
  app.add_option("--beta", args.beta, "reward scale (TRL's default)")
      ->check(dpo::cli::Real(0, /*inclusive=*/false))
      ->capture_default_str();
  app.add_option("--tokenizer", args.tokenizer, "the tokenizer (default: the policy directory)")->option_text("PATH");
  app.add_option("--max-length", args.max_length, "tokens per prompt+completion (TRL's default); 0 = no limit")
      ->check(dpo::cli::Integer(0))
      ->capture_default_str();
  app.add_option("--batch-size", args.batch_size, "pairs per forward pass")
      ->check(dpo::cli::Integer(1))
      ->capture_default_str();
  app.add_option("--implicit-prompt", args.implicit_prompt,
                 "where {chosen, rejected} text pairs split into prompt and completions")
      ->check(CLI::IsMember({"assistant_turn", "common_prefix"}))
      ->capture_default_str();
  app.add_option("--device", args.device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  app.add_option("--dtype", args.dtype, "float32 or bfloat16")->capture_default_str();
  app.footer("Exit status: 0 success; 1 failure, with a one-line reason on stderr; 2 bad usage.");
  if (const auto exit = dpo::cli::Parse(app, argc, argv)) return exit;
  if (args.tokenizer.empty()) args.tokenizer = args.policy;
  return std::nullopt;
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
  prepare.tokenize.implicit_prompt = dpo::ParseImplicitPrompt(args.implicit_prompt);
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
    dpo::PairBatch batch = dpo::MakePairBatch(dataset, std::span(indices).subspan(start, count), collate, device,
                                              /*packed=*/true);
    dpo::ReferenceLogps pol = dpo::ReferenceForward(*policy, batch, logps_options, std::nullopt);
    dpo::ReferenceLogps ref{torch::zeros_like(pol.chosen), torch::zeros_like(pol.rejected)};
    if (reference) ref = dpo::ReferenceForward(*reference, batch, logps_options, std::nullopt);
    at::Tensor values =
        torch::stack({pol.chosen, pol.rejected, ref.chosen, ref.rejected}).to(torch::kCPU, torch::kFloat64);
    auto v = values.accessor<double, 2>();
    for (int64_t b = 0; b < batch.pairs; ++b) {
      // A score JSON cannot hold (it would be written as null) means the model is broken.
      if (!std::isfinite(v[0][b]) || !std::isfinite(v[1][b]) || !std::isfinite(v[2][b]) || !std::isfinite(v[3][b])) {
        dpo::Fail(args.data + ":" + std::to_string(dataset.source_line(start + b)),
                  "non-finite log-probability (policy chosen/rejected " + std::to_string(v[0][b]) + "/" +
                      std::to_string(v[1][b]) + ", reference " + std::to_string(v[2][b]) + "/" +
                      std::to_string(v[3][b]) + "); the model's outputs overflow",
                  dpo::ErrorCode::kBadModel);
      }
      const double reward_chosen = args.beta * (v[0][b] - v[2][b]);
      const double reward_rejected = args.beta * (v[1][b] - v[3][b]);
      nlohmann::json line = {
          {"index", start + b},
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
  return dpo::cli::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (const auto exit = ParseArgs(argc, argv, args)) return *exit;
  try {
    return Run(args);
  } catch (const std::exception& e) {
    std::string text = e.what();
    for (char& c : text) {
      if (c == '\n') c = ' ';
    }
    std::fprintf(stderr, "dpo-eval: error: %s\n", text.c_str());
    return dpo::cli::kExitFailure;
  }
}
