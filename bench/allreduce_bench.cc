// allreduce-bench: the gradient all-reduce the trainer runs, measured as nccl-tests measures it.
// Run under mpirun, one rank per process (CPU: MPI) or per GPU (--device cuda: NCCL):
//
//   mpirun -np 2 build/bin/allreduce-bench [--device cpu|cuda] [--min-bytes 1024]
//          [--max-bytes 67108864] [--iters 20]
//
// For each size (x4 steps) it first validates: rank r fills r + 1, and after the sum every element
// must equal n(n+1)/2 on every rank, else it exits 1 without timing. Then it times --iters
// in-place fp32 sums (after 2 warm-up ones) and prints, on rank 0, one JSON line: size, mean
// time, algorithm bandwidth (bytes / time) and bus bandwidth (algbw x 2(n-1)/n, the per-link
// traffic of a ring all-reduce, comparable with the link speed).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <torch/torch.h>

#include "worker/comm/process_group.h"

namespace {

void Synchronize(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

}  // namespace

int main(int argc, char** argv) {
  dpo::MpiSession mpi(&argc, &argv);
  std::string device_name = "cpu";
  int64_t min_bytes = 1 << 10, max_bytes = 64 << 20, iters = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--device") device_name = value;
    else if (flag == "--min-bytes") min_bytes = std::atoll(value.c_str());
    else if (flag == "--max-bytes") max_bytes = std::atoll(value.c_str());
    else if (flag == "--iters") iters = std::atoll(value.c_str());
    else {
      std::fprintf(stderr, "allreduce-bench: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  const bool cuda = device_name == "cuda";
  const int local = cuda ? mpi.local_rank() % std::max<int>(1, torch::cuda::device_count()) : 0;
  const c10::Device device = cuda ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local))
                                  : c10::Device(c10::kCPU);
  auto group = cuda ? dpo::MakeNcclProcessGroup(local) : dpo::MakeMpiProcessGroup();
  const int n = group->world_size();
  const double expected = n * (n + 1) / 2.0;
  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
    const int64_t count = bytes / 4;
    at::Tensor buffer =
        torch::full({count}, group->rank() + 1.0, torch::dtype(torch::kFloat).device(device));
    group->AllReduceSum(buffer);
    const bool ok = buffer.eq(expected).all().item<bool>();
    if (group->AllReduceScalar(ok ? 0.0 : 1.0) != 0.0) {
      if (group->rank() == 0) {
        std::fprintf(stderr, "allreduce-bench: wrong sum at %lld bytes\n",
                     static_cast<long long>(bytes));
      }
      return 1;
    }
    for (int warmup = 0; warmup < 2; ++warmup) group->AllReduceSum(buffer);
    Synchronize(device);
    group->Barrier();
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) group->AllReduceSum(buffer);
    Synchronize(device);
    group->Barrier();  // the clock stops when the slowest rank is done
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
    if (group->rank() == 0) {
      const double algbw = static_cast<double>(bytes) / seconds / 1e9;
      std::printf("{\"ranks\": %d, \"device\": \"%s\", \"bytes\": %lld, \"time_us\": %.1f, "
                  "\"algbw_gbs\": %.3f, \"busbw_gbs\": %.3f}\n",
                  n, device_name.c_str(), static_cast<long long>(bytes), seconds * 1e6, algbw,
                  algbw * 2.0 * (n - 1) / n);
      std::fflush(stdout);
    }
  }
  return 0;
}
