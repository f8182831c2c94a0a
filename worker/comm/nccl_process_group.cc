// NCCL process group. Compiled only when the build found CUDA and NCCL (DPO_WITH_NCCL).
#include <mpi.h>
#include <nccl.h>

#include <initializer_list>
#include <memory>
#include <optional>
#include <string>

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "common/util/error.h"
#include "worker/comm/process_group.h"

namespace dpo {

namespace {

void CheckNccl(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) Fail(std::string("NCCL ") + what, ncclGetErrorString(rc));
}

ncclDataType_t NcclType(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    default: Fail("NCCL", std::string("unsupported dtype ") + c10::toString(type));
  }
}

// A collective queued on the communication stream; Wait() makes the caller's current stream
// wait for it (no host sync). The watchdog polls `done` too (shared: it may outlive the work).
struct NcclWork final : CollectiveWork {
  explicit NcclWork(c10::DeviceIndex device) : device(device), done(std::make_shared<at::cuda::CUDAEvent>()) {}
  void Wait() override { done->block(c10::cuda::getCurrentCUDAStream(device)); }
  c10::DeviceIndex device;
  std::shared_ptr<at::cuda::CUDAEvent> done;
};

// Owns one ncclComm_t (RAII). All-reduces, all-gathers and reduce-scatters run on a communication
// stream, after the work queued on the current stream, so they overlap compute; broadcasts run
// on the current stream. The watchdog follows every collective until its event completes and
// polls ncclCommGetAsyncError; on a timeout or an error it calls ncclCommAbort (from its own
// thread, as NCCL allows) and ends the process.
class NcclProcessGroup final : public ProcessGroup {
 public:
  NcclProcessGroup(int device_index, CollectiveTimeoutOptions timeout)
      : device_index_(device_index),
        comm_stream_(
            c10::cuda::getStreamFromPool(/*isHighPriority=*/true, static_cast<c10::DeviceIndex>(device_index))) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size_);
    ncclUniqueId id;
    if (rank_ == 0) CheckNccl(ncclGetUniqueId(&id), "GetUniqueId");
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index_));
    CheckNccl(ncclCommInitRank(&comm_, world_size_, id, rank_), "CommInitRank");
    watchdog_.emplace(rank_, world_size_, std::move(timeout),
                      CollectiveWatchdog::Backend{.async_error = [this] { return AsyncError(); },
                                                  .abort = [this] { ncclCommAbort(comm_); }});
  }
  ~NcclProcessGroup() override {
    watchdog_.reset();  // stops polling the communicator before it is destroyed
    if (comm_ != nullptr) ncclCommDestroy(comm_);
  }
  NcclProcessGroup(const NcclProcessGroup&) = delete;
  NcclProcessGroup& operator=(const NcclProcessGroup&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  std::unique_ptr<CollectiveWork> AllReduceSumAsync(const at::Tensor& tensor) override {
    CheckTensor(tensor, "AllReduceSum");
    return OnCommStream("AllReduce", {tensor}, [&](cudaStream_t stream) {
      return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), NcclType(tensor.scalar_type()),
                           ncclSum, comm_, stream);
    });
  }

  std::unique_ptr<CollectiveWork> AllGatherAsync(const at::Tensor& input, const at::Tensor& output) override {
    CheckShards(input, output, "AllGather", /*gathers=*/true);
    // All-gather moves bytes, so any dtype goes as raw bytes.
    return OnCommStream("AllGather", {input, output}, [&](cudaStream_t stream) {
      return ncclAllGather(input.data_ptr(), output.data_ptr(), input.nbytes(), ncclUint8, comm_, stream);
    });
  }

  std::unique_ptr<CollectiveWork> ReduceScatterSumAsync(const at::Tensor& input, const at::Tensor& output) override {
    CheckShards(input, output, "ReduceScatterSum", /*gathers=*/false);
    return OnCommStream("ReduceScatter", {input, output}, [&](cudaStream_t stream) {
      return ncclReduceScatter(input.data_ptr(), output.data_ptr(), output.numel(), NcclType(output.scalar_type()),
                               ncclSum, comm_, stream);
    });
  }

  void Broadcast(at::Tensor& tensor, int root) override {
    CheckTensor(tensor, "Broadcast");
    auto stream = c10::cuda::getCurrentCUDAStream(tensor.device().index());
    CheckNccl(
        ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.nbytes(), ncclUint8, root, comm_, stream.stream()),
        "Broadcast");
    WatchUntilDone("NCCL Broadcast", stream);
  }

  double AllReduceScalar(double value) override {
    double sum = value;
    if (world_size_ > 1) {
      const auto watch = watchdog_->Start("MPI Allreduce");
      MPI_Allreduce(&value, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    }
    return sum;
  }

  void Barrier() override {
    const auto watch = watchdog_->Start("Barrier (stream sync, MPI_Barrier)");
    c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_index_)).synchronize();
    MPI_Barrier(MPI_COMM_WORLD);
  }

 private:
  void CheckTensor(const at::Tensor& tensor, const char* op) const {
    if (!tensor.is_cuda() || tensor.device().index() != device_index_) {
      Fail(std::string("NCCL ") + op, "tensor is not on this rank's CUDA device");
    }
    if (!tensor.is_contiguous()) Fail(std::string("NCCL ") + op, "tensor is not contiguous");
  }
  void CheckShards(const at::Tensor& input, const at::Tensor& output, const char* op, bool gathers) const {
    CheckTensor(input, op);
    CheckTensor(output, op);
    CheckShardShapes(input, output, world_size_, "NCCL", op, gathers);
  }
  // Queues `launch` (one NCCL call, given the communication stream) after the work already
  // queued on the current stream, and returns the work whose Wait orders the current stream
  // after it. `tensors` are the buffers the collective reads or writes.
  template <typename Launch>
  std::unique_ptr<CollectiveWork> OnCommStream(const char* what, std::initializer_list<at::Tensor> tensors,
                                               Launch launch) {
    const auto device = static_cast<c10::DeviceIndex>(device_index_);
    at::cuda::CUDAEvent produced;
    produced.record(c10::cuda::getCurrentCUDAStream(device));
    produced.block(comm_stream_);
    // The allocator may hand a buffer out again once it is freed on the current stream: tell it
    // the communication stream uses it too.
    for (const at::Tensor& tensor : tensors) {
      c10::cuda::CUDACachingAllocator::recordStream(tensor.storage().data_ptr(), comm_stream_);
    }
    CheckNccl(launch(comm_stream_.stream()), what);
    auto work = std::make_unique<NcclWork>(device);
    work->done->record(comm_stream_);
    watchdog_->StartUntil(what, [done = work->done] { return done->query(); });
    return work;
  }
  // Has the watchdog follow the collective just queued on `stream` until it completes.
  void WatchUntilDone(const char* what, const c10::cuda::CUDAStream& stream) {
    auto done = std::make_shared<at::cuda::CUDAEvent>();
    done->record(stream);
    watchdog_->StartUntil(what, [done] { return done->query(); });
  }
  // The communicator's asynchronous error (a peer lost, a network failure), or "".
  std::string AsyncError() const {
    ncclResult_t result = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &result) != ncclSuccess || result == ncclSuccess) return "";
    return std::string("NCCL communicator failed: ") + ncclGetErrorString(result);
  }
  int device_index_;
  int rank_ = 0;
  int world_size_ = 1;
  ncclComm_t comm_ = nullptr;
  c10::cuda::CUDAStream comm_stream_;
  std::optional<CollectiveWatchdog> watchdog_;  // set once comm_ exists
};

}  // namespace

std::unique_ptr<ProcessGroup> MakeNcclProcessGroup(int device_index, CollectiveTimeoutOptions timeout) {
  return std::make_unique<NcclProcessGroup>(device_index, std::move(timeout));
}

}  // namespace dpo
