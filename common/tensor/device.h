// Names of devices and dtypes as they appear in job specs and config.json, mapped to torch.
#pragma once

#include <string>
#include <string_view>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace dpo {

// The device a rank runs on, the one rule for it: "cpu"; "cuda:N"; "cuda", or "auto" when a GPU
// is visible, as CUDA device local_rank mod the visible count (one GPU per rank on a node); "auto"
// without a GPU is the CPU. Throws dpo::Error naming `field` for anything else, or for cuda
// without a GPU.
c10::Device ParseDevice(std::string_view name, std::string_view field, int local_rank = 0);

// "float32"/"fp32"/"float", "bfloat16"/"bf16", "float16"/"fp16"/"half" (config.json's
// torch_dtype spellings). Throws dpo::Error naming `field` otherwise.
c10::ScalarType ParseDtype(std::string_view name, std::string_view field);

// The config.json spelling: "float32", "bfloat16" or "float16".
std::string DtypeName(c10::ScalarType dtype);

}  // namespace dpo
