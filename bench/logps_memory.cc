// logps-memory-bench: peak host memory of one forward + backward of the completion log-probs:
//   chunked    ComputeSequenceLogps (all outputs, chunk_tokens rows of logits at a time)
//   reference  ComputeSequenceLogpsReference (all outputs from the full fp32 logits)
//   plain      what a transformers-style loss does: full fp32 logits, log_softmax, gather.
// Run each configuration in its own process (bench/logps_memory.sh does): the peak is the
// process's getrusage max RSS, reported above the RSS once the inputs exist.
//
//   logps-memory-bench --impl chunked|reference|plain [--batch 8] [--time 1024] [--vocab 151936]
//                      [--hidden 896] [--chunk 512] [--threads 2]
// Prints one JSON line.
#include <sys/resource.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "common/loss/sequence_logps.h"

namespace {

double MaxRssMb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // Linux reports KiB
}

int Usage() {
  std::cerr << "usage: logps-memory-bench --impl chunked|reference|plain [--batch N] [--time N] "
               "[--vocab N] [--hidden N] [--chunk N] [--threads N]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string impl;
  int64_t batch = 8, time = 1024, vocab = 151936, hidden = 896, chunk = 512, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--impl") impl = value;
    else if (flag == "--batch") batch = std::atoll(value);
    else if (flag == "--time") time = std::atoll(value);
    else if (flag == "--vocab") vocab = std::atoll(value);
    else if (flag == "--hidden") hidden = std::atoll(value);
    else if (flag == "--chunk") chunk = std::atoll(value);
    else if (flag == "--threads") threads = std::atoll(value);
    else return Usage();
  }
  if ((impl != "chunked" && impl != "reference" && impl != "plain") || argc % 2 == 0)
    return Usage();
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
      logps = logits.log_softmax(2).gather(2, ids.slice(1, 1).unsqueeze(2)).squeeze(2) *
              mask.slice(1, 1);
    } else {
      logps = (impl == "chunked"
                   ? dpo::ComputeSequenceLogps(h, w, ids, mask, {.chunk_tokens = chunk})
                   : dpo::ComputeSequenceLogpsReference(h, w, ids, mask))
                  .token_logps;
    }
    logps.sum().backward();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double peak = MaxRssMb();
    std::printf(
        "{\"impl\": \"%s\", \"batch\": %lld, \"time\": %lld, \"vocab\": %lld, \"hidden\": %lld, "
        "\"chunk\": %lld, \"baseline_mb\": %.0f, \"peak_mb\": %.0f, \"step_mb\": %.0f, "
        "\"seconds\": %.1f, \"checksum\": %.6g}\n",
        impl.c_str(), static_cast<long long>(batch), static_cast<long long>(time),
        static_cast<long long>(vocab), static_cast<long long>(hidden),
        static_cast<long long>(chunk), baseline, peak, peak - baseline, seconds,
        logps.sum().item<double>());
  } catch (const std::exception& e) {
    std::cerr << "logps-memory-bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
