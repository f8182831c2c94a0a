// allreduce-bench: the collectives the trainer runs (all-reduce, all-gather, reduce-scatter),
// measured as nccl-tests measures them. Run under mpirun, one rank per process (CPU: MPI) or per
// GPU (--device cuda: NCCL):
//
//   mpirun -np 2 build/bin/allreduce-bench [--device cpu|cuda] [--min-bytes 1024]
//          [--max-bytes 67108864] [--iters 20]
//
// "Size" is the full fp32 buffer: the all-reduced tensor, all-gather's output, reduce-scatter's
// input (rounded down to a multiple of 4·ranks bytes). For each collective and size (x4 steps) it
// first validates: every element of the result, on every rank, must equal its known value (see
// Prepare), else it exits 1 without timing. Then it times --iters runs (after 2 warm-up ones) and
// prints, on rank 0, one JSON line: collective, size, mean time, algorithm bandwidth (size /
// time) and bus bandwidth (the per-link traffic of a ring, comparable with the link speed:
// algbw x 2(n-1)/n for all-reduce, algbw x (n-1)/n for all-gather and reduce-scatter).
// Exit status (docs/cli.md): 0 when every result was right; 1 when one was wrong; 2 on bad usage
// (on every rank).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "common/util/cli.h"
#include "worker/comm/process_group.h"

namespace {

void Synchronize(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

enum class Op { kAllReduce, kAllGather, kReduceScatter };

struct Collective {
  Op op;
  const char* name;
  double bus_factor;  // busbw / algbw is bus_factor·(n-1)/n
};

constexpr Collective kCollectives[] = {{Op::kAllReduce, "all_reduce", 2.0},
                                       {Op::kAllGather, "all_gather", 1.0},
                                       {Op::kReduceScatter, "reduce_scatter", 1.0}};

// The buffers of one collective over `count` fp32 elements (the full buffer), and the result
// every element of `output` must hold after one run. All-reduce sums `output` in place.
struct Buffers {
  at::Tensor input, output, expected;
};

// Rank r contributes r + 1, so an all-reduce gives n(n+1)/2 and an all-gather r + 1 in rank r's
// slice; for reduce-scatter rank r puts (r + 1)(s + 1) in slice s, so rank s receives
// n(n+1)/2 · (s + 1): a slice landing on the wrong rank shows.
Buffers Prepare(Op op, int64_t count, int rank, int n, const at::TensorOptions& options) {
  const int64_t shard = count / n;
  const double rank_sum = n * (n + 1) / 2.0;
  if (op == Op::kAllReduce) {
    at::Tensor buffer = torch::full({count}, rank + 1.0, options);
    return {buffer, buffer, torch::full({count}, rank_sum, options)};
  }
  if (op == Op::kAllGather) {
    return {torch::full({shard}, rank + 1.0, options), torch::empty({n, shard}, options),
            torch::arange(1, n + 1, options).unsqueeze(1).expand({n, shard})};
  }
  return {(torch::arange(1, n + 1, options) * (rank + 1.0)).repeat_interleave(shard), torch::empty({shard}, options),
          torch::full({shard}, rank_sum * (rank + 1), options)};
}

void Run(dpo::ProcessGroup& group, Op op, const Buffers& b) {
  switch (op) {
    case Op::kAllReduce: group.AllReduceSumAsync(b.output)->Wait(); return;
    case Op::kAllGather: group.AllGatherAsync(b.input, b.output)->Wait(); return;
    case Op::kReduceScatter: group.ReduceScatterSumAsync(b.input, b.output)->Wait(); return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  dpo::MpiSession mpi(&argc, &argv);
  dpo::cli::App app(
      "Validates and times the trainer's collectives (all-reduce, all-gather, reduce-scatter)\n"
      "on fp32 buffers of --min-bytes to --max-bytes (x4 steps), nccl-tests style; rank 0\n"
      "prints one JSON line per collective and size. Run under mpirun, one rank per process.",
      "allreduce-bench");
  std::string device_name = "cpu";
  int64_t min_bytes = 1 << 10, max_bytes = 64 << 20, iters = 20;
  app.add_option("--device", device_name, "cpu (MPI) or cuda (NCCL, one GPU per rank)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  // Up to 1 TiB: the x4 steps must not overflow.
  constexpr int64_t kMaxBytes = int64_t{1} << 40;
  app.add_option("--min-bytes", min_bytes, "the smallest buffer")
      ->check(dpo::cli::Integer(1, kMaxBytes))
      ->capture_default_str();
  app.add_option("--max-bytes", max_bytes, "the largest buffer")
      ->check(dpo::cli::Integer(1, kMaxBytes))
      ->capture_default_str();
  app.add_option("--iters", iters, "timed runs per collective and size, after 2 warm-up runs")
      ->check(dpo::cli::Integer(1))
      ->capture_default_str();
  app.footer("Exit status: 0 every result right; 1 a collective gave a wrong result; 2 bad usage.");
  if (const auto exit = dpo::cli::Parse(app, argc, argv)) return *exit;
  const bool cuda = device_name == "cuda";
  const int local = cuda ? mpi.local_rank() % std::max<int>(1, torch::cuda::device_count()) : 0;
  const c10::Device device =
      cuda ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local)) : c10::Device(c10::kCPU);
  auto group = cuda ? dpo::MakeNcclProcessGroup(local) : dpo::MakeMpiProcessGroup();
  const int n = group->world_size();
  const auto options = torch::dtype(torch::kFloat).device(device);
  for (const Collective& collective : kCollectives) {
    for (int64_t size = min_bytes; size <= max_bytes; size *= 4) {
      const int64_t count = size / 4 / n * n;
      if (count == 0) continue;
      const int64_t bytes = count * 4;
      const Buffers buffers = Prepare(collective.op, count, group->rank(), n, options);
      Run(*group, collective.op, buffers);
      const int64_t wrong = buffers.output.ne(buffers.expected).sum().item<int64_t>();
      const double wrong_everywhere = group->AllReduceScalar(static_cast<double>(wrong));
      if (wrong_everywhere != 0.0) {
        if (group->rank() == 0) {
          std::fprintf(stderr, "allreduce-bench: %s: %.0f wrong elements at %lld bytes\n", collective.name,
                       wrong_everywhere, static_cast<long long>(bytes));
        }
        return dpo::cli::kExitFailure;
      }
      for (int warmup = 0; warmup < 2; ++warmup) Run(*group, collective.op, buffers);
      Synchronize(device);
      group->Barrier();
      const auto start = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < iters; ++i) Run(*group, collective.op, buffers);
      Synchronize(device);
      group->Barrier();  // the clock stops when the slowest rank is done
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
      if (group->rank() == 0) {
        const double algbw = static_cast<double>(bytes) / seconds / 1e9;
        std::printf(
            "{\"collective\": \"%s\", \"ranks\": %d, \"device\": \"%s\", \"bytes\": %lld, "
            "\"time_us\": %.1f, \"algbw_gbs\": %.3f, \"busbw_gbs\": %.3f}\n",
            collective.name, n, device_name.c_str(), static_cast<long long>(bytes), seconds * 1e6, algbw,
            algbw * collective.bus_factor * (n - 1) / n);
        std::fflush(stdout);
      }
    }
  }
  return dpo::cli::kExitOk;
}
