#include <mpi.h>

#include <cstdlib>
#include <string>

#include <torch/torch.h>

#include "common/util/error.h"
#include "worker/comm/process_group.h"

namespace dpo {
namespace {

void CheckMpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  Fail(std::string("MPI ") + what, std::string(text, length));
}

MPI_Datatype MpiType(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    case at::kByte: return MPI_UINT8_T;
    default: Fail("MPI", std::string("unsupported dtype ") + c10::toString(type));
  }
}

// One MPI_Iallreduce in flight. bf16 and f16 are summed through an fp32 copy (MPI has no 16-bit
// float sum), copied back in Wait.
class MpiAllReduce final : public CollectiveWork {
 public:
  MpiAllReduce(at::Tensor tensor, int world_size) : tensor_(std::move(tensor)) {
    if (world_size == 1) return;
    const bool narrow = tensor_.scalar_type() == at::kBFloat16 || tensor_.scalar_type() == at::kHalf;
    wire_ = narrow ? tensor_.to(at::kFloat) : tensor_;
    CheckMpi(MPI_Iallreduce(MPI_IN_PLACE, wire_.data_ptr(), static_cast<int>(wire_.numel()),
                            MpiType(wire_.scalar_type()), MPI_SUM, MPI_COMM_WORLD, &request_),
             "Iallreduce");
  }
  ~MpiAllReduce() override {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  MpiAllReduce(const MpiAllReduce&) = delete;
  MpiAllReduce& operator=(const MpiAllReduce&) = delete;

  void Wait() override {
    if (request_ == MPI_REQUEST_NULL) return;
    CheckMpi(MPI_Wait(&request_, MPI_STATUS_IGNORE), "Wait");
    if (!wire_.is_same(tensor_)) tensor_.copy_(wire_);
  }

 private:
  at::Tensor tensor_, wire_;
  MPI_Request request_ = MPI_REQUEST_NULL;
};

class MpiProcessGroup final : public ProcessGroup {
 public:
  MpiProcessGroup() {
    CheckMpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "Comm_rank");
    CheckMpi(MPI_Comm_size(MPI_COMM_WORLD, &world_size_), "Comm_size");
  }
  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  std::unique_ptr<CollectiveWork> AllReduceSumAsync(const at::Tensor& tensor) override {
    CheckTensor(tensor, "AllReduceSum");
    return std::make_unique<MpiAllReduce>(tensor, world_size_);
  }

  void Broadcast(at::Tensor& tensor, int root) override {
    if (world_size_ == 1) return;
    CheckTensor(tensor, "Broadcast");
    // Broadcast moves bytes, so any dtype goes as raw bytes.
    CheckMpi(MPI_Bcast(tensor.data_ptr(), static_cast<int>(tensor.nbytes()), MPI_BYTE, root,
                       MPI_COMM_WORLD),
             "Bcast");
  }

  double AllReduceScalar(double value) override {
    double sum = value;
    if (world_size_ > 1) {
      CheckMpi(MPI_Allreduce(&value, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "Allreduce");
    }
    return sum;
  }

  void Barrier() override { CheckMpi(MPI_Barrier(MPI_COMM_WORLD), "Barrier"); }

 private:
  static void CheckTensor(const at::Tensor& tensor, const char* op) {
    if (!tensor.device().is_cpu()) Fail(std::string("MPI ") + op, "tensor is not on the CPU");
    if (!tensor.is_contiguous()) Fail(std::string("MPI ") + op, "tensor is not contiguous");
    if (tensor.numel() > INT32_MAX) Fail(std::string("MPI ") + op, "tensor too large");
  }
  int rank_ = 0;
  int world_size_ = 1;
};

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    CheckMpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "Init_thread");
    owns_init_ = true;
  }
  CheckMpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "Comm_rank");
  CheckMpi(MPI_Comm_size(MPI_COMM_WORLD, &world_size_), "Comm_size");
  if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) local_rank_ = std::atoi(local);
}

MpiSession::~MpiSession() {
  if (owns_init_) MPI_Finalize();
}

void AbortAllRanks(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

std::unique_ptr<ProcessGroup> MakeMpiProcessGroup() { return std::make_unique<MpiProcessGroup>(); }

}  // namespace dpo
