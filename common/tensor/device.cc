#include "common/tensor/device.h"

#include <torch/torch.h>

#include "common/util/error.h"

namespace dpo {

c10::Device ParseDevice(std::string_view name, std::string_view field, int local_rank) {
  if (name == "cpu") return c10::Device(c10::kCPU);
  const bool cuda = torch::cuda::is_available();
  // One GPU per rank on a node: local rank r takes GPU r mod the GPUs it sees.
  const auto rank_gpu = [&] {
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank % torch::cuda::device_count()));
  };
  if (name == "auto") return cuda ? rank_gpu() : c10::Device(c10::kCPU);
  if (name == "cuda" || name.starts_with("cuda:")) {
    if (!cuda) Fail(field, "device \"" + std::string(name) + "\" requested but no CUDA device is visible");
    if (name == "cuda") return rank_gpu();
    try {
      const c10::Device device{std::string(name)};
      if (device.index() >= static_cast<int>(torch::cuda::device_count())) {
        Fail(field, "device \"" + std::string(name) + "\" does not exist");
      }
      return device;
    } catch (const c10::Error&) {
      Fail(field, "invalid device \"" + std::string(name) + "\"");
    }
  }
  Fail(field, "invalid device \"" + std::string(name) + "\"; expected cpu, cuda, cuda:N or auto");
}

c10::ScalarType ParseDtype(std::string_view name, std::string_view field) {
  if (name == "float32" || name == "fp32" || name == "float") return c10::kFloat;
  if (name == "bfloat16" || name == "bf16") return c10::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return c10::kHalf;
  Fail(field, "invalid dtype \"" + std::string(name) + "\"; expected float32, bfloat16 or float16");
}

std::string DtypeName(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat: return "float32";
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    default: Fail("dtype", std::string("unsupported dtype ") + c10::toString(dtype));
  }
}

}  // namespace dpo
