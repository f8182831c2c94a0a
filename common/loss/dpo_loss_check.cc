// dpo-loss-check IN.json OUT.json: runs the loss area on tensors given as JSON and writes the
// results, so the oracle tests (tests/oracle/test_logps.py, test_losses.py) can compare them with
// TRL in the same run. A test tool, not part of the training path.
//
// A tensor is {"shape": [...], "data": [flat row-major numbers], "dtype": "float32"|...}.
// IN.mode = "logps": hidden, weight, input_ids, completion_mask, grad_seed ([B, T-1]),
//   chunk_tokens, optional "reference": true to run the full-logits reference instead.
//   OUT: token_* fields, label_mask, completion_tokens, and grad_hidden / grad_weight of
//   Σ grad_seed · token_logps.
#include <torch/torch.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "common/loss/sequence_logps.h"
#include "common/util/error.h"

namespace dpo {
namespace {

using nlohmann::json;

at::ScalarType ParseDtype(const std::string& name, const std::string& field) {
  if (name == "float32") return torch::kFloat;
  if (name == "float64") return torch::kDouble;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "int64") return torch::kLong;
  if (name == "bool") return torch::kBool;
  Fail(field, "unknown dtype '" + name + "'");
}

at::Tensor ReadTensor(const json& in, const std::string& field) {
  if (!in.contains(field)) Fail("dpo-loss-check input", "missing tensor '" + field + "'");
  const json& t = in.at(field);
  const std::vector<int64_t> shape = t.at("shape").get<std::vector<int64_t>>();
  const std::vector<double> data = t.at("data").get<std::vector<double>>();
  at::Tensor flat = torch::tensor(data, torch::kDouble);
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (numel != flat.numel())
    Fail(field, "shape holds " + std::to_string(numel) + " values, data has " +
                    std::to_string(flat.numel()));
  return flat.reshape(shape).to(ParseDtype(t.value("dtype", "float32"), field));
}

json WriteTensor(const at::Tensor& t) {
  const at::Tensor d = t.detach().to(torch::kDouble).contiguous().cpu();
  const double* p = d.data_ptr<double>();
  return {{"shape", t.sizes().vec()}, {"data", std::vector<double>(p, p + d.numel())}};
}

json RunLogps(const json& in) {
  at::Tensor hidden = ReadTensor(in, "hidden").requires_grad_();
  at::Tensor weight = ReadTensor(in, "weight").requires_grad_();
  const at::Tensor ids = ReadTensor(in, "input_ids"), mask = ReadTensor(in, "completion_mask");
  const at::Tensor seed = ReadTensor(in, "grad_seed");
  const SequenceLogps s =
      in.value("reference", false)
          ? ComputeSequenceLogpsReference(hidden, weight, ids, mask)
          : ComputeSequenceLogps(hidden, weight, ids, mask,
                                 {.chunk_tokens = in.value("chunk_tokens", int64_t{512})});
  (s.token_logps * seed).sum().backward();
  return {{"token_logps", WriteTensor(s.token_logps)},
          {"token_entropy", WriteTensor(s.token_entropy)},
          {"token_log_sum_sq_probs", WriteTensor(s.token_log_sum_sq_probs)},
          {"token_mean_logits", WriteTensor(s.token_mean_logits)},
          {"token_is_top1", WriteTensor(s.token_is_top1)},
          {"label_mask", WriteTensor(s.label_mask)},
          {"completion_tokens", WriteTensor(s.completion_tokens)},
          {"grad_hidden", WriteTensor(hidden.grad())},
          {"grad_weight", WriteTensor(weight.grad())}};
}

int Main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: dpo-loss-check IN.json OUT.json\n";
    return 2;
  }
  std::ifstream file(argv[1]);
  if (!file) Fail(argv[1], "cannot open");
  const json in = json::parse(file);
  const std::string mode = in.value("mode", "");
  json out;
  if (mode == "logps") {
    out = RunLogps(in);
  } else {
    Fail(std::string(argv[1]) + ": mode", "expected \"logps\", got \"" + mode + "\"");
  }
  std::ofstream(argv[2]) << out.dump();
  return 0;
}

}  // namespace
}  // namespace dpo

int main(int argc, char** argv) {
  try {
    return dpo::Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "dpo-loss-check: " << e.what() << "\n";
    return 1;
  }
}
