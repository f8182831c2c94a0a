// Collective communication across the ranks of one training job.
//
// The rule every caller must keep: all ranks call the same collectives, on tensors of the same
// shape and dtype, in the same order. A rank that skips or reorders one deadlocks the job.
//
// CPU tensors go over MPI; CUDA tensors over NCCL, whose communicator is bootstrapped through
// MPI (rank 0's ncclUniqueId is broadcast with MPI_Bcast).
//
// Every collective wait is bounded (CollectiveTimeoutOptions): a rank that stops answering makes
// the others fail with collective_timeout instead of waiting forever.
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "worker/comm/collective_watchdog.h"

namespace dpo {

// A collective in flight. Destruction waits for it, so its buffer is never freed under it. It
// must not outlive the group that started it (its waits are watched by the group's watchdog).
class CollectiveWork {
 public:
  virtual ~CollectiveWork() = default;
  // MPI: blocks until the result is in the tensor. NCCL: orders the calling thread's current
  // CUDA stream after the collective, without blocking the host.
  virtual void Wait() = 0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Starts an in-place sum over ranks and returns at once. The tensor must be contiguous and
  // stay untouched until Wait(). NCCL runs it on a communication stream, after the work already
  // queued on the current stream, so it overlaps what the current stream does next.
  virtual std::unique_ptr<CollectiveWork> AllReduceSumAsync(const at::Tensor& tensor) = 0;
  // In-place sum over ranks: AllReduceSumAsync, then Wait.
  void AllReduceSum(at::Tensor& tensor) { AllReduceSumAsync(tensor)->Wait(); }
  // Starts an all-gather and returns at once: `output` (world_size() × input.numel() elements,
  // same dtype and device, contiguous) receives every rank's `input`, rank r's at
  // [r·n, (r+1)·n). Both tensors stay untouched until Wait(). Any dtype (bytes are moved).
  // NCCL orders it after the work queued on the current stream, as AllReduceSumAsync does.
  virtual std::unique_ptr<CollectiveWork> AllGatherAsync(const at::Tensor& input, const at::Tensor& output) = 0;
  // Starts a sum-reduce-scatter and returns at once: `input` holds world_size() × n elements;
  // `output` (n elements, same dtype and device, contiguous) receives the sum over ranks of
  // input[r·n, (r+1)·n) for this rank r. bf16/f16 are summed through fp32 on MPI, as all-reduce.
  virtual std::unique_ptr<CollectiveWork> ReduceScatterSumAsync(const at::Tensor& input, const at::Tensor& output) = 0;
  // In-place copy of root's tensor to every rank. The tensor must be contiguous.
  virtual void Broadcast(at::Tensor& tensor, int root) = 0;
  // Sum of one double over ranks (metrics, bad-step votes). Host-side; blocks.
  virtual double AllReduceScalar(double value) = 0;
  virtual void Barrier() = 0;
};

// Checks all-gather (`gathers`) or reduce-scatter tensors: one dtype, and the whole side
// (all-gather's output, reduce-scatter's input) world_size times the shard side. Throws
// dpo::Error naming `library` and `op`. Shared by the MPI and NCCL groups.
void CheckShardShapes(const at::Tensor& input, const at::Tensor& output, int world_size, const char* library,
                      const char* op, bool gathers);

// Initialises MPI once per process (thread level FUNNELED) and finalises it at exit. Works
// under mpirun and as a single process started without it (MPI singleton).
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  // Rank within this node (OMPI_COMM_WORLD_LOCAL_RANK), for picking a GPU.
  int local_rank() const { return local_rank_; }
  // MPI_Barrier over MPI_COMM_WORLD, before any process group exists (no timeout).
  void Barrier() const;

 private:
  bool owns_init_ = false;
  int rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
};

// Ends every rank of the job with `code` (MPI_Abort): a rank that fails must not leave the
// others blocked in a collective.
[[noreturn]] void AbortAllRanks(int code);

// MPI over MPI_COMM_WORLD; CPU tensors of float, double, bfloat16 (as 16-bit sums are
// not supported, bf16/f16 are reduced through an fp32 copy), int32 or int64. Every wait is
// bounded by `timeout` (collective_watchdog.h).
std::unique_ptr<ProcessGroup> MakeMpiProcessGroup(CollectiveTimeoutOptions timeout = {});

// NCCL over CUDA tensors on `device_index`; needs an MpiSession. Throws dpo::Error when the
// build has no NCCL. Every collective is bounded by `timeout`, and the communicator is polled
// for asynchronous errors; either aborts it (ncclCommAbort) and ends the process.
std::unique_ptr<ProcessGroup> MakeNcclProcessGroup(int device_index, CollectiveTimeoutOptions timeout = {});

}  // namespace dpo
