// dpo-prepare: tokenizes a preference dataset once into the binary file the trainer maps.
//
//   dpo-prepare --tokenizer PATH --data FILE.jsonl[.gz] --out FILE.bin [options]
//
// Prints the load report, pairs/s, and (with --batch-size) the padding fraction of one epoch's
// padded batches with and without length grouping. Exit status 1 on any error, with the message.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/data/batch.h"
#include "common/data/prepared_dataset.h"
#include "common/data/sampler.h"
#include "common/tokenizer/tokenizer.h"

namespace dpo {
namespace {

constexpr const char* kUsage =
    "usage: dpo-prepare --tokenizer PATH --data FILE.jsonl[.gz] --out FILE.bin [options]\n"
    "  --max-length N             longest prompt+completion (default 1024, 0 = none)\n"
    "  --max-prompt-length N      prompt keeps its end (default 0 = none)\n"
    "  --max-completion-length N  completion keeps its start (default 0 = none)\n"
    "  --truncation-mode M        keep_start | keep_end (default keep_start)\n"
    "  --chat-template NAME       chatml | qwen3 | llama3 | mistral (default: from the tokenizer)\n"
    "  --on-error P               fail | skip (default fail)\n"
    "  --implicit-prompt R        assistant_turn | common_prefix (TRL's extract_prompt): where\n"
    "                             {chosen, rejected} text pairs split (default assistant_turn)\n"
    "  --threads N                worker threads (default 0 = every core)\n"
    "  --max-line-bytes N         longest accepted line (default 16777216)\n"
    "  --batch-size B             also report the padding fraction of B-pair batches\n"
    "  --seed S                   shuffle seed for that report (default 42)\n";

size_t ToSize(const std::string& flag, const std::string& value) {
  char* end = nullptr;
  unsigned long long n = std::strtoull(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || value[0] == '-') Fail(flag, "expected a non-negative integer, got \"" + value + "\"");
  return static_cast<size_t>(n);
}

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
  std::string tokenizer_path, data_path, out_path;
  PrepareOptions options;
  size_t batch_size = 0;
  uint64_t seed = 42;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) Fail(flag, std::string("missing value\n") + kUsage);
    std::string value = argv[++i];
    if (flag == "--tokenizer") tokenizer_path = value;
    else if (flag == "--data") data_path = value;
    else if (flag == "--out") out_path = value;
    else if (flag == "--max-length") options.tokenize.max_length = ToSize(flag, value);
    else if (flag == "--max-prompt-length") options.tokenize.max_prompt_length = ToSize(flag, value);
    else if (flag == "--max-completion-length") options.tokenize.max_completion_length = ToSize(flag, value);
    else if (flag == "--truncation-mode") options.tokenize.truncation_mode = ParseTruncationMode(value);
    else if (flag == "--chat-template") options.tokenize.chat_template = value;
    else if (flag == "--on-error") options.on_error = ParseOnError(value);
    else if (flag == "--implicit-prompt") options.tokenize.implicit_prompt = ParseImplicitPrompt(value);
    else if (flag == "--threads") options.num_threads = ToSize(flag, value);
    else if (flag == "--max-line-bytes") options.max_line_bytes = ToSize(flag, value);
    else if (flag == "--batch-size") batch_size = ToSize(flag, value);
    else if (flag == "--seed") seed = ToSize(flag, value);
    else Fail(flag, std::string("unknown option\n") + kUsage);
  }
  if (tokenizer_path.empty() || data_path.empty() || out_path.empty()) {
    Fail("dpo-prepare", std::string("--tokenizer, --data and --out are required\n") + kUsage);
  }
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
  return 0;
}

}  // namespace
}  // namespace dpo

int main(int argc, char** argv) {
  try {
    return dpo::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dpo-prepare: %s\n", e.what());
    return 1;
  }
}
