#include "common/model/precision_check.h"

#include <cstdio>

#include <torch/torch.h>

#include "common/model/pretrained.h"

namespace dpo {
namespace {

ModelConfig SmallConfig(const std::string& type) {
  ModelConfig c;
  c.model_type = type;
  c.vocab_size = 512;
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5;
  if (type == "llama") {
    c.rope_type = "llama3";
    c.rope_theta = 500000.0;
    c.rope_factor = 8.0;
    c.rope_low_freq_factor = 1.0;
    c.rope_high_freq_factor = 4.0;
    c.rope_original_max_position_embeddings = 64;
  } else {
    c.qk_norm = true;
    c.qkv_bias = c.o_bias = true;
    c.head_dim = 32;  // != hidden / heads, as in real Qwen3 models
    c.tie_word_embeddings = true;
  }
  c.Validate(type + " precision config");
  return c;
}

torch::Tensor LogitsOn(const ModelConfig& config, torch::ScalarType dtype, const torch::Device& device,
                       const torch::Tensor& ids) {
  torch::NoGradGuard no_grad;
  auto model = RandomInit(config, /*seed=*/1234, dtype, device);
  return model->Logits(ids.to(device)).to(torch::kCPU, torch::kFloat32);
}

PrecisionRow Compare(std::string model, std::string comparison, const torch::Tensor& candidate,
                     const torch::Tensor& reference, double tolerance) {
  torch::Tensor diff = (candidate - reference).to(torch::kFloat64);
  double rel = diff.norm().item<double>() / reference.to(torch::kFloat64).norm().item<double>();
  return {std::move(model),
          std::move(comparison),
          diff.abs().max().item<double>(),
          reference.abs().max().item<double>(),
          rel,
          tolerance};
}

}  // namespace

std::vector<PrecisionRow> RunPrecisionChecks(const torch::Device& device) {
  std::vector<PrecisionRow> rows;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const std::string dev = device.str();
  for (const std::string type : {"llama", "qwen3"}) {
    ModelConfig config = SmallConfig(type);
    torch::Tensor ids = torch::randint(config.vocab_size, {2, 48}, gen, torch::kInt64);
    torch::Tensor fp32 = LogitsOn(config, torch::kFloat32, device, ids);
    torch::Tensor bf16 = LogitsOn(config, torch::kBFloat16, device, ids);
    rows.push_back(Compare(type, dev + " bf16 vs " + dev + " fp32", bf16, fp32, 1e-2));
    if (!device.is_cpu()) {
      torch::Tensor cpu = LogitsOn(config, torch::kFloat32, torch::kCPU, ids);
      rows.push_back(Compare(type, dev + " fp32 vs cpu fp32", fp32, cpu, 1e-4));
    }
  }
  return rows;
}

std::string FormatPrecisionTable(const std::vector<PrecisionRow>& rows) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof(line), "%-6s %-28s %12s %12s %12s %10s %s\n", "model", "comparison", "max|d|", "max|ref|",
                "rel", "tol", "result");
  out += line;
  for (const auto& r : rows) {
    std::snprintf(line, sizeof(line), "%-6s %-28s %12.3e %12.3e %12.3e %10.1e %s\n", r.model.c_str(),
                  r.comparison.c_str(), r.max_abs_error, r.max_abs_ref, r.relative_error, r.tolerance,
                  r.pass() ? "PASS" : "FAIL");
    out += line;
  }
  return out;
}

}  // namespace dpo
