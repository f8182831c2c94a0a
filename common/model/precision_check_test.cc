#include "common/model/precision_check.h"

#include <gtest/gtest.h>

#include <torch/torch.h>

namespace dpo {
namespace {

// The CPU half of tests/gpu/run_gpu_checks.sh: bf16 vs fp32 logits on small Llama and Qwen3.
TEST(PrecisionCheckTest, CpuBf16MatchesFp32) {
  auto rows = RunPrecisionChecks(torch::kCPU);
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& r : rows) {
    EXPECT_TRUE(r.pass()) << FormatPrecisionTable(rows);
    EXPECT_GT(r.max_abs_error, 0.0);  // bf16 really ran in lower precision
  }
  EXPECT_NE(FormatPrecisionTable(rows).find("llama"), std::string::npos);
}

}  // namespace
}  // namespace dpo
