// Numerical agreement of the model across dtypes and devices, for the GPU machine's check
// script (tests/gpu/run_gpu_checks.sh via `dpo-model-check precision`) and a CPU unit test.
#pragma once

#include <string>
#include <vector>

#include <torch/types.h>

namespace dpo {

struct PrecisionRow {
  std::string model;       // "llama" or "qwen3" (small random configs)
  std::string comparison;  // e.g. "cuda bf16 vs cuda fp32"
  double max_abs_error;    // max |candidate logit - reference logit|
  double max_abs_ref;      // max |reference logit|
  // ||candidate - reference|| / ||reference|| over all logits (Frobenius norms): the usual
  // relative error, robust to the single worst rounding of a max-based ratio.
  double relative_error;
  double tolerance;  // bound on relative_error
  bool pass() const { return relative_error <= tolerance; }
};

// For a small random Llama (GQA, llama3 RoPE scaling) and Qwen3 (q/k norm, q/k/v bias) model,
// compares logits of bf16 vs fp32 on `device` (relative error tolerance 1e-2) and, when `device`
// is not the CPU, `device` fp32 vs CPU fp32 (tolerance 1e-4; TF32 stays off, LibTorch's
// default). Same seed, weights and token ids everywhere.
std::vector<PrecisionRow> RunPrecisionChecks(const torch::Device& device);

// A fixed-width table of `rows`, one line each, with PASS/FAIL.
std::string FormatPrecisionTable(const std::vector<PrecisionRow>& rows);

}  // namespace dpo
