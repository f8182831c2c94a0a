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

class MpiProcessGroup final : public ProcessGroup {
 public:
  MpiProcessGroup() {
    CheckMpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "Comm_rank");
    CheckMpi(MPI_Comm_size(MPI_COMM_WORLD, &world_size_), "Comm_size");
  }
  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  void AllReduceSum(at::Tensor& tensor) override {
    if (world_size_ == 1) return;
    CheckTensor(tensor, "AllReduceSum");
    if (tensor.scalar_type() == at::kBFloat16 || tensor.scalar_type() == at::kHalf) {
      at::Tensor wide = tensor.to(at::kFloat);
      AllReduceSum(wide);
      tensor.copy_(wide);
      return;
    }
    CheckMpi(MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), static_cast<int>(tensor.numel()),
                           MpiType(tensor.scalar_type()), MPI_SUM, MPI_COMM_WORLD),
             "Allreduce");
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
