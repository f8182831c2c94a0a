#include <mpi.h>

#include <cstdlib>
#include <string>

#include <torch/torch.h>

#include "common/util/error.h"
#include "worker/comm/collective_watchdog.h"
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

// MPI has no 16-bit float sum: bf16 and f16 are summed through an fp32 copy.
bool SumsWide(const at::Tensor& tensor) {
  return tensor.scalar_type() == at::kBFloat16 || tensor.scalar_type() == at::kHalf;
}

// The buffer MPI sums from: `tensor` itself, or its fp32 copy (SumsWide).
at::Tensor SumSource(const at::Tensor& tensor) { return SumsWide(tensor) ? tensor.to(at::kFloat) : tensor; }

// The buffer MPI writes a sum into: `result` itself, or an fp32 stand-in copied back in Wait.
at::Tensor SumTarget(const at::Tensor& result) {
  return SumsWide(result) ? at::empty(result.sizes(), result.options().dtype(at::kFloat)) : result;
}

// One nonblocking MPI collective in flight, the completion path of every collective here. MPI
// reads `source` and writes `wire` until the request completes, so the work holds both; Wait
// then copies `wire` into `result` when it is an fp32 stand-in. Destruction waits for the
// request, so MPI never touches a freed buffer. Every wait is watched by the group's watchdog.
class MpiWork final : public CollectiveWork {
 public:
  // A collective that needed no communication (one rank): already complete.
  MpiWork() = default;
  // `what` names the MPI_I* call (a literal); `start` makes it: int(MPI_Request*).
  template <typename Start>
  MpiWork(const char* what, CollectiveWatchdog& watchdog, at::Tensor source, at::Tensor wire, at::Tensor result,
          Start start)
      : what_(what),
        watchdog_(&watchdog),
        source_(std::move(source)),
        wire_(std::move(wire)),
        result_(std::move(result)) {
    CheckMpi(start(&request_), what);
  }
  ~MpiWork() override {
    if (request_ == MPI_REQUEST_NULL) return;
    const auto watch = watchdog_->Start(what_);
    MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  MpiWork(const MpiWork&) = delete;
  MpiWork& operator=(const MpiWork&) = delete;

  void Wait() override {
    if (request_ == MPI_REQUEST_NULL) return;
    {
      const auto watch = watchdog_->Start(what_);
      CheckMpi(MPI_Wait(&request_, MPI_STATUS_IGNORE), "Wait");
    }
    if (!wire_.is_same(result_)) result_.copy_(wire_);
  }

 private:
  const char* what_ = "";
  CollectiveWatchdog* watchdog_ = nullptr;
  at::Tensor source_, wire_, result_;
  MPI_Request request_ = MPI_REQUEST_NULL;
};

}  // namespace

// Declared in process_group.h; defined here, the file every build links (NCCL bootstraps over MPI).
void CheckShardShapes(const at::Tensor& input, const at::Tensor& output, int world_size, const char* library,
                      const char* op, bool gathers) {
  const std::string context = std::string(library) + ' ' + op;
  if (input.scalar_type() != output.scalar_type()) {
    Fail(context, std::string("input is ") + c10::toString(input.scalar_type()) + " but output is " +
                      c10::toString(output.scalar_type()));
  }
  const at::Tensor& shard = gathers ? input : output;
  const at::Tensor& whole = gathers ? output : input;
  if (whole.numel() != world_size * shard.numel()) {
    Fail(context, std::string(gathers ? "output" : "input") + " has " + std::to_string(whole.numel()) +
                      " elements; expected world size " + std::to_string(world_size) + " x " +
                      (gathers ? "input" : "output") + "'s " + std::to_string(shard.numel()));
  }
}

namespace {

class MpiProcessGroup final : public ProcessGroup {
 public:
  explicit MpiProcessGroup(CollectiveTimeoutOptions timeout)
      : rank_(CommRank()), world_size_(CommSize()), watchdog_(rank_, world_size_, std::move(timeout)) {}
  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  std::unique_ptr<CollectiveWork> AllReduceSumAsync(const at::Tensor& tensor) override {
    CheckTensor(tensor, "AllReduceSum");
    if (world_size_ == 1) return std::make_unique<MpiWork>();
    at::Tensor wire = SumSource(tensor);  // summed in place
    return std::make_unique<MpiWork>("MPI Iallreduce", watchdog_, wire, wire, tensor, [&](MPI_Request* request) {
      return MPI_Iallreduce(MPI_IN_PLACE, wire.data_ptr(), static_cast<int>(wire.numel()), MpiType(wire.scalar_type()),
                            MPI_SUM, MPI_COMM_WORLD, request);
    });
  }

  std::unique_ptr<CollectiveWork> AllGatherAsync(const at::Tensor& input, const at::Tensor& output) override {
    CheckShards(input, output, "AllGather", /*gathers=*/true);
    // Counted in bytes below.
    if (input.nbytes() > INT32_MAX) Fail("MPI AllGather", "input too large");
    if (world_size_ == 1) return Copied(input, output);
    // All-gather moves bytes, so any dtype goes as raw bytes.
    return std::make_unique<MpiWork>("MPI Iallgather", watchdog_, input, output, output, [&](MPI_Request* request) {
      const int bytes = static_cast<int>(input.nbytes());
      return MPI_Iallgather(input.data_ptr(), bytes, MPI_BYTE, output.data_ptr(), bytes, MPI_BYTE, MPI_COMM_WORLD,
                            request);
    });
  }

  std::unique_ptr<CollectiveWork> ReduceScatterSumAsync(const at::Tensor& input, const at::Tensor& output) override {
    CheckShards(input, output, "ReduceScatterSum", /*gathers=*/false);
    if (world_size_ == 1) return Copied(input, output);
    at::Tensor source = SumSource(input), wire = SumTarget(output);
    return std::make_unique<MpiWork>(
        "MPI Ireduce_scatter_block", watchdog_, source, wire, output, [&](MPI_Request* request) {
          return MPI_Ireduce_scatter_block(source.data_ptr(), wire.data_ptr(), static_cast<int>(wire.numel()),
                                           MpiType(wire.scalar_type()), MPI_SUM, MPI_COMM_WORLD, request);
        });
  }

  void Broadcast(at::Tensor& tensor, int root) override {
    if (world_size_ == 1) return;
    CheckTensor(tensor, "Broadcast");
    // Broadcast moves bytes, so any dtype goes as raw bytes.
    const auto watch = watchdog_.Start("MPI Bcast");
    CheckMpi(MPI_Bcast(tensor.data_ptr(), static_cast<int>(tensor.nbytes()), MPI_BYTE, root, MPI_COMM_WORLD), "Bcast");
  }

  double AllReduceScalar(double value) override {
    double sum = value;
    if (world_size_ > 1) {
      const auto watch = watchdog_.Start("MPI Allreduce");
      CheckMpi(MPI_Allreduce(&value, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "Allreduce");
    }
    return sum;
  }

  void Barrier() override {
    const auto watch = watchdog_.Start("MPI Barrier");
    CheckMpi(MPI_Barrier(MPI_COMM_WORLD), "Barrier");
  }

 private:
  static void CheckTensor(const at::Tensor& tensor, const char* op) {
    if (!tensor.device().is_cpu()) Fail(std::string("MPI ") + op, "tensor is not on the CPU");
    if (!tensor.is_contiguous()) Fail(std::string("MPI ") + op, "tensor is not contiguous");
    if (tensor.numel() > INT32_MAX) Fail(std::string("MPI ") + op, "tensor too large");
  }
  void CheckShards(const at::Tensor& input, const at::Tensor& output, const char* op, bool gathers) const {
    CheckTensor(input, op);
    CheckTensor(output, op);
    CheckShardShapes(input, output, world_size_, "MPI", op, gathers);
  }
  // One rank: the gathered or scattered result is the input itself.
  static std::unique_ptr<CollectiveWork> Copied(const at::Tensor& input, const at::Tensor& output) {
    output.view(-1).copy_(input.view(-1));
    return std::make_unique<MpiWork>();
  }
  static int CommRank() {
    int rank = 0;
    CheckMpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "Comm_rank");
    return rank;
  }
  static int CommSize() {
    int size = 1;
    CheckMpi(MPI_Comm_size(MPI_COMM_WORLD, &size), "Comm_size");
    return size;
  }
  const int rank_;
  const int world_size_;
  CollectiveWatchdog watchdog_;
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

void MpiSession::Barrier() const {
  if (world_size_ > 1) CheckMpi(MPI_Barrier(MPI_COMM_WORLD), "Barrier");
}

MpiSession::~MpiSession() {
  if (owns_init_) MPI_Finalize();
}

void AbortAllRanks(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

std::unique_ptr<ProcessGroup> MakeMpiProcessGroup(CollectiveTimeoutOptions timeout) {
  return std::make_unique<MpiProcessGroup>(std::move(timeout));
}

}  // namespace dpo
