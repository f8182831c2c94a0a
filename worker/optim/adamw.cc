#include "worker/optim/adamw.h"

#include <cctype>
#include <cmath>
#include <regex>

#include <torch/torch.h>

#include "common/util/error.h"

namespace dpo {

bool HfDecaysParameter(const std::string& name) {
  static const std::regex excluded("bias|layernorm|rmsnorm|(?:^|\\.)norm(?:$|\\.)|_norm(?:$|\\.)");
  std::string lower = name;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return !std::regex_search(lower, excluded);
}

AdamW::AdamW(std::vector<at::Tensor> params, std::vector<std::string> names, AdamWOptions options,
             const std::vector<std::vector<ParamSlice>>& slices)
    : params_(std::move(params)), names_(std::move(names)), options_(options) {
  if (params_.size() != names_.size()) Fail("AdamW", "params and names differ in length");
  if (!slices.empty() && slices.size() != params_.size()) Fail("AdamW", "params and slices differ in length");
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::vector<ParamSlice> whole{{names_[i], 0, params_[i].numel()}};
    for (const ParamSlice& s : slices.empty() ? whole : slices[i]) {
      if (options_.exclude_biases_and_norms_from_decay && !HfDecaysParameter(s.name)) continue;
      if (!decayed_.empty() && decayed_.back().tensor == i && decayed_.back().end == s.begin) {
        decayed_.back().end = s.end;
      } else {
        decayed_.push_back({i, s.begin, s.end});
      }
    }
  }
  torch::NoGradGuard no_grad;
  for (const at::Tensor& p : params_) {
    exp_avg_.push_back(torch::zeros_like(p, at::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(torch::zeros_like(p, at::MemoryFormat::Preserve));
    step_.push_back(torch::zeros({}, p.options().dtype(at::kFloat)));
  }
}

void AdamW::Step(double lr) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> params, grads, exp_avg, exp_avg_sq, steps;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].grad().defined()) continue;
    params.push_back(params_[i]);
    grads.push_back(params_[i].grad());
    exp_avg.push_back(exp_avg_[i]);
    exp_avg_sq.push_back(exp_avg_sq_[i]);
    steps.push_back(step_[i]);
  }
  if (params.empty()) return;
  // Decoupled weight decay, p *= 1 - lr·wd before the Adam update as torch's AdamW applies it,
  // on the decayed ranges of the tensors that have a gradient.
  if (options_.weight_decay != 0) {
    for (const DecayRange& r : decayed_) {
      if (!params_[r.tensor].grad().defined()) continue;
      params_[r.tensor].view(-1).narrow(0, r.begin, r.end - r.begin).mul_(1 - lr * options_.weight_decay);
    }
  }
  at::_foreach_add_(steps, 1);
  at::_fused_adamw_(params, grads, exp_avg, exp_avg_sq, /*max_exp_avg_sqs=*/{}, steps, lr, options_.beta1,
                    options_.beta2, /*weight_decay=*/0.0, options_.eps,
                    /*amsgrad=*/false, /*maximize=*/false);
}

void AdamW::ZeroGrad() {
  for (at::Tensor& p : params_) {
    if (p.grad().defined()) p.mutable_grad().reset();
  }
}

double AdamW::ClipGradNorm(double max_norm, const std::function<double(double)>& sum_over_ranks) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (const at::Tensor& p : params_) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  double norm = 0.0;
  if (!grads.empty()) {
    // torch's fp32 norm accumulates in fp32: ~1e-4 relative error at 4M elements, and a value
    // that depends on how the gradient is split into tensors (whole parameters, or a sharded
    // run's flat units). Norms of 64K-element chunks (~1e-7 error), combined in double, agree
    // to ~1e-7 however it is split.
    constexpr int64_t kChunk = 1 << 16;
    std::vector<at::Tensor> chunks;
    for (const at::Tensor& g : grads) {
      for (const at::Tensor& chunk : g.reshape(-1).split(kChunk)) chunks.push_back(chunk);
    }
    std::vector<at::Tensor> norms = at::_foreach_norm(chunks, 2);
    norm = at::linalg_vector_norm(at::stack(norms).to(at::kDouble), 2).item<double>();
  }
  if (sum_over_ranks) norm = std::sqrt(sum_over_ranks(norm * norm));
  if (max_norm > 0 && std::isfinite(norm) && !grads.empty()) {
    // The same coefficient torch computes, from the fp32 norm.
    const double coef =
        std::min(1.0, static_cast<double>(static_cast<float>(max_norm) / (static_cast<float>(norm) + 1e-6f)));
    at::_foreach_mul_(grads, coef);
  }
  return norm;
}

std::map<std::string, at::Tensor> AdamW::StateDict() const {
  std::map<std::string, at::Tensor> state;
  for (size_t i = 0; i < params_.size(); ++i) {
    state["exp_avg." + names_[i]] = exp_avg_[i];
    state["exp_avg_sq." + names_[i]] = exp_avg_sq_[i];
    state["step." + names_[i]] = step_[i];
  }
  return state;
}

void AdamW::LoadStateDict(const std::map<std::string, at::Tensor>& state) {
  torch::NoGradGuard no_grad;
  auto restore = [&](const std::string& key, at::Tensor& into) {
    auto it = state.find(key);
    if (it == state.end()) Fail("optimizer state", "missing tensor \"" + key + "\"");
    if (it->second.sizes() != into.sizes()) {
      Fail("optimizer state",
           "tensor \"" + key + "\" has shape " + c10::str(it->second.sizes()) + ", expected " + c10::str(into.sizes()));
    }
    into.copy_(it->second);
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    restore("exp_avg." + names_[i], exp_avg_[i]);
    restore("exp_avg_sq." + names_[i], exp_avg_sq_[i]);
    restore("step." + names_[i], step_[i]);
  }
}

}  // namespace dpo
