#include "common/tensor/device.h"

#include <gtest/gtest.h>

#include <torch/torch.h>

#include "common/util/error.h"

namespace dpo {
namespace {

TEST(DeviceTest, ParsesNamesAndRejectsOthersWithTheField) {
  EXPECT_EQ(ParseDevice("cpu", "model.device"), c10::Device(c10::kCPU));
  EXPECT_EQ(ParseDevice("auto", "model.device").is_cuda(), torch::cuda::is_available());
  try {
    ParseDevice("tpu", "model.device");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.device"), std::string::npos);
  }
  if (!torch::cuda::is_available()) {
    EXPECT_THROW(ParseDevice("cuda", "d"), Error);
  }
}

TEST(DeviceTest, DtypeNamesRoundTrip) {
  for (auto dtype : {c10::kFloat, c10::kBFloat16, c10::kHalf}) {
    EXPECT_EQ(ParseDtype(DtypeName(dtype), "x"), dtype);
  }
  EXPECT_EQ(ParseDtype("bf16", "x"), c10::kBFloat16);
  EXPECT_THROW(ParseDtype("int8", "model.dtype"), Error);
}

}  // namespace
}  // namespace dpo
