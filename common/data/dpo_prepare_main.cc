// dpo-prepare: tokenizes a preference dataset once into the binary file the trainer maps.
//
//   dpo-prepare --tokenizer PATH --data FILE.jsonl[.gz] --out FILE.bin [options]   (--help: all)
//
// Prints the load report, pairs/s, and (with --batch-size) the padding fraction of one epoch's
// padded batches with and without length grouping. Exit status (docs/cli.md): 0 prepared (or
// reused); 1 any error, with the message (file:line for bad data); 2 bad usage.
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "common/data/batch.h"
#include "common/data/prepared_dataset.h"
#include "common/data/sampler.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/cli.h"

namespace dpo {
namespace {

double EpochPaddingFraction(const PreparedDataset& data, const CollateOptions& collate, size_t batch_size,
                            uint64_t seed, bool grouped) {
  SamplerOptions sampler;
  sampler.batch_size = batch_size;
  sampler.seed = seed;
  sampler.group_by_length = grouped;
  auto length = [&](uint32_t i) {
    auto p = data.pair(i);
    return TruncatedLength(p.prompt.size(), std::max(p.chosen.size(), p.rejected.size()), collate);
  };
  size_t cells = 0, padding = 0;
  for (const auto& batch : PlanEpoch(data.size(), sampler, 0, length)) {
    PaddedBatch padded = CollatePadded(data, batch, collate);
    cells += padded.rows * padded.width;
    padding += padded.rows * padded.width - padded.real_tokens();
  }
  return cells ? static_cast<double>(padding) / static_cast<double>(cells) : 0.0;
}

int Main(int argc, char** argv) {
  dpo::cli::App app(
      "Tokenizes a preference data set once into the binary file training maps; prints the\n"
      "load report, pairs/s, and with --batch-size the padding fraction of one epoch's\n"
      "padded batches with and without length grouping.",
      "dpo-prepare");
  std::string tokenizer_path, data_path, out_path;
  PrepareOptions options;
  std::string truncation_mode = "keep_start", on_error = "fail", implicit_prompt = "assistant_turn";
  size_t batch_size = 0;
  uint64_t seed = 42;
  app.add_option("--tokenizer", tokenizer_path, "a tokenizer.json or a directory holding one")
      ->type_name("PATH")
      ->required();
  app.add_option("--data", data_path, "the preference data, JSON lines (.gz too)")
      ->type_name("FILE.jsonl[.gz]")
      ->required();
  app.add_option("--out", out_path, "the prepared file (reused when already up to date)")
      ->type_name("FILE.bin")
      ->required();
  const auto count = [&](const char* flag, size_t& value, const char* what, int64_t min = 0) {
    app.add_option(flag, value, what)->type_name("N")->check(dpo::cli::Integer(min))->capture_default_str();
  };
  count("--max-length", options.tokenize.max_length, "longest prompt+completion, 0 = none");
  count("--max-prompt-length", options.tokenize.max_prompt_length, "the prompt keeps its end; 0 = none");
  count("--max-completion-length", options.tokenize.max_completion_length, "each completion keeps its start; 0 = none");
  app.add_option("--truncation-mode", truncation_mode, "which end a sequence over --max-length keeps")
      ->check(CLI::IsMember({"keep_start", "keep_end"}))
      ->capture_default_str();
  app.add_option("--chat-template", options.tokenize.chat_template,
                 "chatml | qwen3 | llama3 | mistral (default: the tokenizer's own)")
      ->type_name("NAME");
  app.add_option("--on-error", on_error, "what a bad line does: fail, or skip it (counted in the report)")
      ->check(CLI::IsMember({"fail", "skip"}))
      ->capture_default_str();
  app.add_option("--implicit-prompt", implicit_prompt,
                 "where {chosen, rejected} text pairs split: at the last assistant turn, or after\n"
                 "their common prefix (TRL's extract_prompt)")
      ->check(CLI::IsMember({"assistant_turn", "common_prefix"}))
      ->capture_default_str();
  count("--threads", options.num_threads, "worker threads, 0 = every core");
  count("--max-line-bytes", options.max_line_bytes, "longest accepted line", 1);
  app.add_option("--batch-size", batch_size, "also report the padding fraction of B-pair batches")
      ->type_name("B")
      ->check(dpo::cli::Integer(1));
  app.add_option("--seed", seed, "shuffle seed for that report")
      ->type_name("S")
      ->check(dpo::cli::Integer(0, std::numeric_limits<int64_t>::max()))
      ->capture_default_str();
  app.footer("Exit status: 0 prepared (or reused); 1 any error, with the message; 2 bad usage.");
  if (const auto exit = dpo::cli::Parse(app, argc, argv)) return *exit;
  options.tokenize.truncation_mode = ParseTruncationMode(truncation_mode);
  options.on_error = ParseOnError(on_error);
  options.tokenize.implicit_prompt = ParseImplicitPrompt(implicit_prompt);
  auto tokenizer = Tokenizer::Load(tokenizer_path);
  PrepareResult result = PrepareDataset(*tokenizer, data_path, out_path, options);
  RequirePairs(result, data_path);
  const DataReport& r = result.report;
  std::printf("%s: %s\n", out_path.c_str(), result.reused ? "up to date (reused)" : "prepared");
  std::printf("%s\n", r.Summary().c_str());
  for (const auto& message : r.first_messages) std::printf("  %s\n", message.c_str());
  PreparedDataset data(out_path);
  std::printf("pairs: %zu  tokens: %zu  time: %.3f s", data.size(), data.num_tokens(), result.seconds);
  if (!result.reused && result.seconds > 0) {
    std::printf("  pairs/s: %.0f", static_cast<double>(r.lines) / result.seconds);
  }
  std::printf("\n");
  if (batch_size > 0) {
    CollateOptions collate;
    collate.max_length = options.tokenize.max_length;
    collate.truncation_mode = options.tokenize.truncation_mode;
    std::printf("padding fraction (batch %zu): random %.4f  length-grouped %.4f\n", batch_size,
                EpochPaddingFraction(data, collate, batch_size, seed, false),
                EpochPaddingFraction(data, collate, batch_size, seed, true));
  }
  return dpo::cli::kExitOk;
}

}  // namespace
}  // namespace dpo

int main(int argc, char** argv) {
  try {
    return dpo::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dpo-prepare: %s\n", e.what());
    return dpo::cli::kExitFailure;
  }
}
