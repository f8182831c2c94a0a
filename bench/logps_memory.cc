// logps-memory-bench: peak host memory of one forward + backward of the completion log-probs:
//   chunked    ComputeSequenceLogps (all outputs, chunk_tokens rows of logits at a time)
//   reference  ComputeSequenceLogpsReference (all outputs from the full fp32 logits)
//   plain      what a transformers-style loss does: full fp32 logits, log_softmax, gather.
// Run each configuration in its own process (bench/logps_memory.sh does): the peak is the
// process's getrusage max RSS, reported above the RSS once the inputs exist.
//
//   logps-memory-bench --impl chunked|reference|plain [--batch 8] [--time 1024] [--vocab 151936]
//                      [--hidden 896] [--chunk 512] [--threads 2]
// Prints one JSON line. Exit status (docs/cli.md): 0 on success; 1 when the step failed (out of
// memory, a size torch refuses); 2 on bad usage.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include <torch/torch.h>

#include "common/loss/sequence_logps.h"
#include "common/util/cli.h"

namespace {

double MaxRssMb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // Linux reports KiB
}

}  // namespace

int main(int argc, char** argv) {
  dpo::cli::App app(
      "Peak host memory of one forward + backward of the completion log-probs over random\n"
      "inputs of the given shape; prints one JSON line. Run each configuration in its own\n"
      "process (bench/logps_memory.sh does).",
      "logps-memory-bench");
  std::string impl;
  int64_t batch = 8, time = 1024, vocab = 151936, hidden = 896, chunk = 512, threads = 2;
  app.add_option("--impl", impl,
                 "chunked: ComputeSequenceLogps, --chunk rows of logits at a time; reference:\n"
                 "ComputeSequenceLogpsReference, full fp32 logits; plain: what a transformers-style\n"
                 "loss does (full logits, log_softmax, gather)")
      ->required()
      ->check(CLI::IsMember({"chunked", "reference", "plain"}));
  app.add_option("--batch", batch, "sequences")->check(dpo::cli::Integer(1))->capture_default_str();
  app.add_option("--time", time, "tokens per sequence, >= 2: a one-token prompt, the others scored")
      ->check(dpo::cli::Integer(2))
      ->capture_default_str();
  app.add_option("--vocab", vocab, "vocabulary size")->check(dpo::cli::Integer(1))->capture_default_str();
  app.add_option("--hidden", hidden, "hidden size")->check(dpo::cli::Integer(1))->capture_default_str();
  app.add_option("--chunk", chunk, "with --impl chunked: tokens per chunk")
      ->check(dpo::cli::Integer(1))
      ->capture_default_str();
  app.add_option("--threads", threads, "torch threads")->check(dpo::cli::Integer(1))->capture_default_str();
  app.footer("Exit status: 0 success; 1 the step failed (out of memory, a size torch refuses); 2 bad usage.");
  if (const auto exit = dpo::cli::Parse(app, argc, argv)) return *exit;
  try {
    torch::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(0);
    // Inputs as a training step has them: hidden states and the lm_head weight with grads.
    const at::Tensor h = torch::randn({batch, time, hidden}).requires_grad_();
    const at::Tensor w = torch::randn({vocab, hidden}).mul_(0.02).requires_grad_();  // no temporary
    const at::Tensor ids = torch::randint(0, vocab, {batch, time}, torch::kLong);
    at::Tensor mask = torch::ones({batch, time}, torch::kLong);
    mask.select(1, 0).zero_();  // a one-token prompt: every other position is scored
    const double baseline = MaxRssMb();

    const auto start = std::chrono::steady_clock::now();
    at::Tensor logps;
    if (impl == "plain") {
      const at::Tensor logits = at::matmul(h.slice(1, 0, time - 1), w.t());
      logps = logits.log_softmax(2).gather(2, ids.slice(1, 1).unsqueeze(2)).squeeze(2) * mask.slice(1, 1);
    } else {
      logps = (impl == "chunked" ? dpo::ComputeSequenceLogps(h, w, ids, mask, {.chunk_tokens = chunk})
                                 : dpo::ComputeSequenceLogpsReference(h, w, ids, mask))
                  .token_logps;
    }
    logps.sum().backward();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double peak = MaxRssMb();
    std::printf(
        "{\"impl\": \"%s\", \"batch\": %lld, \"time\": %lld, \"vocab\": %lld, \"hidden\": %lld, "
        "\"chunk\": %lld, \"baseline_mb\": %.0f, \"peak_mb\": %.0f, \"step_mb\": %.0f, "
        "\"seconds\": %.1f, \"checksum\": %.6g}\n",
        impl.c_str(), static_cast<long long>(batch), static_cast<long long>(time), static_cast<long long>(vocab),
        static_cast<long long>(hidden), static_cast<long long>(chunk), baseline, peak, peak - baseline, seconds,
        logps.sum().item<double>());
  } catch (const std::exception& e) {
    std::cerr << "logps-memory-bench: " << e.what() << "\n";
    return dpo::cli::kExitFailure;
  }
  return dpo::cli::kExitOk;
}
