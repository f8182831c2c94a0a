// dpo-loss-check IN.json OUT.json: runs the loss area on tensors given as JSON and writes the
// results, so the oracle tests (tests/oracle/test_logps.py, test_losses.py) can compare them with
// TRL in the same run. A test tool, not part of the training path.
//
// A tensor is {"shape": [...], "data": [flat row-major numbers], "dtype": "float32"|...}.
// IN.mode = "logps": hidden, weight, input_ids, completion_mask, grad_seed ([B, T-1]),
//   chunk_tokens, optional "reference": true to run the full-logits reference instead.
//   OUT: token_* fields, label_mask, completion_tokens, and grad_hidden / grad_weight of
//   Σ grad_seed · token_logps.
// IN.mode = "loss": options (TRL's DPOConfig field names), policy {token_logps, token_entropy,
//   token_log_sum_sq_probs, token_mean_logits, token_is_top1 ([2B, T-1]), completion_mask
//   ([2B, T])}, optional reference: per-token {token_logps} (reduced like the policy) or
//   precomputed sums {chosen, rejected}. OUT: loss, chosen_rewards, rejected_rewards,
//   grad_token_logps (d loss / d policy token_logps) and metrics {TRL name: value}.
// IN.mode = "pipeline": options, hidden / weight (policy), ref_hidden / ref_weight, input_ids,
//   completion_mask ([2B, T]), chunk_tokens: log-probs then loss, as a training step runs them.
//   OUT: loss, chosen_rewards, rejected_rewards, grad_weight, metrics.
//
// Exit status (docs/cli.md): 0 OUT written; 1 IN cannot be read or holds bad tensors or options;
// 2 bad usage.
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include <torch/torch.h>

#include "common/config/job_spec.h"
#include "common/loss/dpo_loss.h"
#include "common/loss/sequence_logps.h"
#include "common/util/cli.h"
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
    Fail(field, "shape holds " + std::to_string(numel) + " values, data has " + std::to_string(flat.numel()));
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
          : ComputeSequenceLogps(hidden, weight, ids, mask, {.chunk_tokens = in.value("chunk_tokens", int64_t{512})});
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

// The options as the worker reads them: the dpo.* keys through the spec's own parser (JSON is
// YAML), plus reference_free, which a spec sets through reference.mode.
DpoLossOptions ReadOptions(json j) {
  const bool reference_free = j.value("reference_free", false);
  j.erase("reference_free");
  DpoLossOptions o = ParseDpoSection(j.dump(), "options");
  o.reference_free = reference_free;
  return o;
}

// Per-token outputs as ComputeSequenceLogps would give them, from the test's tensors.
SequenceLogps ReadSequenceLogps(const json& j, const at::Tensor& completion_mask) {
  SequenceLogps s;
  s.label_mask = completion_mask.slice(1, 1).ne(0);
  s.completion_tokens = completion_mask.ne(0).sum(1).to(torch::kFloat);
  s.token_logps = ReadTensor(j, "token_logps");
  auto optional = [&](const char* name, at::ScalarType dtype) {
    return j.contains(name) ? ReadTensor(j, name).to(dtype) : torch::zeros(s.token_logps.sizes(), dtype);
  };
  s.token_entropy = optional("token_entropy", torch::kFloat);
  s.token_log_sum_sq_probs = optional("token_log_sum_sq_probs", torch::kFloat);
  s.token_mean_logits = optional("token_mean_logits", torch::kFloat);
  s.token_is_top1 = optional("token_is_top1", torch::kBool);
  return s;
}

// The loss, rewards and metrics of `result`, and the gradient the caller checks as `grad_name`.
json LossOutput(const DpoLossResult& result, const char* grad_name, const at::Tensor& grad) {
  json metrics = json::object();
  for (const auto& [name, value] : ReadMetricSums(result.metric_sums).Logs()) metrics[name] = value;
  return {{"loss", WriteTensor(result.loss)},
          {"chosen_rewards", WriteTensor(result.chosen_rewards)},
          {"rejected_rewards", WriteTensor(result.rejected_rewards)},
          {grad_name, WriteTensor(grad)},
          {"metrics", metrics}};
}

json RunLoss(const json& in) {
  const DpoLossOptions options = ReadOptions(in.at("options"));
  const json& p = in.at("policy");
  const at::Tensor completion_mask = ReadTensor(p, "completion_mask");
  SequenceLogps policy = ReadSequenceLogps(p, completion_mask);
  policy.token_logps.requires_grad_();
  std::optional<ReferenceLogps> reference;
  if (in.contains("reference")) {
    const json& r = in.at("reference");
    if (r.contains("token_logps")) {
      reference = ReferenceLogps::FromSums(SequenceLogpSums(ReadSequenceLogps(r, completion_mask), options.ld_alpha));
    } else {
      reference = ReferenceLogps{ReadTensor(r, "chosen"), ReadTensor(r, "rejected")};
    }
  }
  const DpoLossResult result = ComputeDpoLoss(options, policy, reference);
  result.loss.backward();
  return LossOutput(result, "grad_token_logps", policy.token_logps.grad());
}

json RunPipeline(const json& in) {
  const DpoLossOptions options = ReadOptions(in.at("options"));
  const SequenceLogpsOptions logps_options{.chunk_tokens = in.value("chunk_tokens", int64_t{512})};
  at::Tensor weight = ReadTensor(in, "weight").requires_grad_();
  const at::Tensor ids = ReadTensor(in, "input_ids"), mask = ReadTensor(in, "completion_mask");
  std::optional<ReferenceLogps> reference;
  {
    torch::NoGradGuard no_grad;
    const SequenceLogps ref =
        ComputeSequenceLogps(ReadTensor(in, "ref_hidden"), ReadTensor(in, "ref_weight"), ids, mask, logps_options);
    reference = ReferenceLogps::FromSums(SequenceLogpSums(ref, options.ld_alpha));
  }
  const SequenceLogps policy = ComputeSequenceLogps(ReadTensor(in, "hidden"), weight, ids, mask, logps_options);
  const DpoLossResult result = ComputeDpoLoss(options, policy, reference);
  result.loss.backward();
  return LossOutput(result, "grad_weight", weight.grad());
}

int Main(int argc, char** argv) {
  dpo::cli::App app(
      "Runs the loss area on tensors given as JSON and writes the results, for the oracle\n"
      "tests (tests/oracle/test_logps.py, test_losses.py). IN.mode is \"logps\", \"loss\" or\n"
      "\"pipeline\"; the header of common/loss/dpo_loss_check.cc lists their fields.",
      "dpo-loss-check");
  std::string in_path, out_path;
  app.add_option("IN.json", in_path, "the mode and its tensors ({shape, data, dtype})")->required();
  app.add_option("OUT.json", out_path, "the results, written")->required();
  app.footer(
      "Exit status: 0 OUT written; 1 IN cannot be read or holds bad tensors or options; 2 bad\n"
      "usage.");
  if (const auto exit = cli::Parse(app, argc, argv)) return *exit;
  std::ifstream file(in_path);
  if (!file) Fail(in_path, "cannot open");
  const json in = json::parse(file);
  const std::string mode = in.value("mode", "");
  json out;
  if (mode == "logps") {
    out = RunLogps(in);
  } else if (mode == "loss") {
    out = RunLoss(in);
  } else if (mode == "pipeline") {
    out = RunPipeline(in);
  } else {
    Fail(in_path + ": mode", "expected \"logps\", \"loss\" or \"pipeline\", got \"" + mode + "\"");
  }
  std::ofstream(out_path) << out.dump();
  return cli::kExitOk;
}

}  // namespace
}  // namespace dpo

int main(int argc, char** argv) {
  try {
    return dpo::Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "dpo-loss-check: " << e.what() << "\n";
    return dpo::cli::kExitFailure;
  }
}
