// Built instead of nccl_process_group.cc when the build has no CUDA or NCCL.
#include "common/util/error.h"
#include "worker/comm/process_group.h"

namespace dpo {

std::unique_ptr<ProcessGroup> MakeNcclProcessGroup(int, CollectiveTimeoutOptions) {
  Fail("NCCL", "this build has no CUDA/NCCL support; run on the CPU (device: cpu)");
}

}  // namespace dpo
