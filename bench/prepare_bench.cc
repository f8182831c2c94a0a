// prepare_bench: throughput of dataset preparation and padding of the batches it yields.
//
//   prepare_bench [--tokenizer DIR] [--data FILE] [--max-length N] [--batch-size B]
//
// Defaults: the qwen3 tokenizer and HH-RLHF harmless-base test split in ../shared (run from the
// repository root, with the shared data beside it),
// max_length 1024, 8 pairs per batch. Prepares the data with 1 thread and with every core
// (pairs/s each, order-preserving output checked identical), then reports for one epoch the
// share of padding tokens in padded batches without and with length grouping, and the tokens
// a packed (padding-free) layout saves. Exit status (docs/cli.md): 0 measured; 1 the data or
// tokenizer cannot be read, or the outputs differ; 2 bad usage.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "common/data/batch.h"
#include "common/data/prepared_dataset.h"
#include "common/data/sampler.h"
#include "common/util/cli.h"
#include "common/util/hash.h"
#include "common/util/path_util.h"

namespace dpo {
namespace {

struct Padding {
  size_t cells = 0, real = 0;
  double fraction() const { return cells ? 1.0 - static_cast<double>(real) / static_cast<double>(cells) : 0; }
};

Padding EpochPadding(const PreparedDataset& data, const CollateOptions& collate, size_t batch, bool grouped) {
  SamplerOptions sampler;
  sampler.batch_size = batch;
  sampler.group_by_length = grouped;
  auto length = [&](uint32_t i) {
    auto p = data.pair(i);
    return TruncatedLength(p.prompt.size(), std::max(p.chosen.size(), p.rejected.size()), collate);
  };
  Padding padding;
  for (const auto& b : PlanEpoch(data.size(), sampler, 0, length)) {
    PaddedBatch padded = CollatePadded(data, b, collate);
    padding.cells += padded.rows * padded.width;
    padding.real += padded.real_tokens();
  }
  return padding;
}

int Main(int argc, char** argv) {
  dpo::cli::App app(
      "Prepares a data set with 1 thread and with every core (pairs/s each, outputs checked\n"
      "identical), then reports one epoch's share of padding in padded batches without and\n"
      "with length grouping, and the tokens a packed layout saves.",
      "prepare_bench");
  std::string tokenizer_path = "../shared/tokenizers/qwen3";
  std::string data_path = "../shared/data/hh-rlhf/harmless-base-test.jsonl.gz";
  size_t max_length = 1024, batch = 8;
  app.add_option("--tokenizer", tokenizer_path, "a tokenizer.json or a directory holding one")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_option("--data", data_path, "the preference data, JSON lines (.gz too)")
      ->type_name("FILE")
      ->capture_default_str();
  app.add_option("--max-length", max_length, "longest prompt+completion, 0 = none")
      ->type_name("N")
      ->check(cli::Integer(0))
      ->capture_default_str();
  app.add_option("--batch-size", batch, "pairs per batch")
      ->type_name("B")
      ->check(cli::Integer(1))
      ->capture_default_str();
  app.footer(
      "Run from the repository root (the defaults are in ../shared). Exit status: 0 measured;\n"
      "1 the data or tokenizer cannot be read, or the outputs differ; 2 bad usage.");
  if (const auto exit = cli::Parse(app, argc, argv)) return *exit;
  auto tokenizer = Tokenizer::Load(tokenizer_path);
  auto dir = std::filesystem::temp_directory_path() / ("prepare_bench_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  PrepareOptions options;
  options.tokenize.max_length = max_length;
  size_t cores = std::max(1u, std::thread::hardware_concurrency());
  std::string outputs[2];
  std::printf("data %s\ntokenizer %s  max_length %zu\n", data_path.c_str(), tokenizer_path.c_str(), max_length);
  for (size_t threads : {size_t{1}, cores}) {
    options.num_threads = threads;
    std::string out = (dir / ("t" + std::to_string(threads) + ".bin")).string();
    PrepareResult r = PrepareDataset(*tokenizer, data_path, out, options);
    std::printf("prepare threads=%zu: %zu pairs in %.3f s = %.0f pairs/s (%s)\n", threads, r.report.lines, r.seconds,
                static_cast<double>(r.report.lines) / r.seconds, r.report.Summary().c_str());
    outputs[threads == 1 ? 0 : 1] = out;
  }
  if (HashFile(outputs[0]) != HashFile(outputs[1])) Fail("prepare_bench", "outputs differ between thread counts");
  PreparedDataset data(outputs[1]);
  auto start = std::chrono::steady_clock::now();
  options.num_threads = cores;
  bool reused = PrepareDataset(*tokenizer, data_path, outputs[1], options).reused;
  double check = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("unchanged re-run: reused=%d in %.3f s (hashing the source)\n", reused, check);

  CollateOptions collate;
  collate.max_length = max_length;
  Padding random = EpochPadding(data, collate, batch, false);
  Padding grouped = EpochPadding(data, collate, batch, true);
  std::printf("padded batches of %zu pairs (%zu rows): padding fraction random %.4f, length-grouped %.4f\n", batch,
              2 * batch, random.fraction(), grouped.fraction());
  std::printf("packed layout: %zu tokens vs %zu padded cells (grouped)\n", grouped.real, grouped.cells);
  dpo::RemoveTree(dir.string());
  return cli::kExitOk;
}

}  // namespace
}  // namespace dpo

int main(int argc, char** argv) {
  try {
    return dpo::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "prepare_bench: %s\n", e.what());
    return dpo::cli::kExitFailure;
  }
}
