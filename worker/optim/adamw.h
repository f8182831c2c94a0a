// AdamW over a fixed list of parameters, stepping all of them with one fused ATen kernel
// (at::_fused_adamw_, CPU and CUDA), as torch.optim.AdamW(fused=True) does. Moments are fp32
// when the parameters are (fp32 master weights). Gradient clipping lives here too, since it
// must see every gradient before the step.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace dpo {

struct AdamWOptions {
  double lr = 1e-6;           // Default: TRL's DPOConfig learning_rate; overwritten per step
  double beta1 = 0.9;         // Default: torch/HF
  double beta2 = 0.999;       // Default: torch/HF
  double eps = 1e-8;          // Default: torch/HF
  double weight_decay = 0.0;  // Default: HF TrainingArguments (0)
  // Leave biases and normalization weights out of weight decay, as HF's Trainer does
  // (Trainer.get_decay_parameter_names: names with "bias", "layernorm", "rmsnorm", a ".norm."
  // or "_norm" part). Default: true, so a run with weight_decay > 0 equals TRL's.
  bool exclude_biases_and_norms_from_decay = true;
};

// Which model parameter elements [begin, end) of a stepped tensor hold: a sharded run steps
// flat shards, each holding slices of several parameters.
struct ParamSlice {
  std::string name;
  int64_t begin = 0, end = 0;
};

class AdamW {
 public:
  // `names` label the state tensors for checkpoints; they must be unique and parallel `params`.
  // `slices[i]` says which parameters tensor i holds, for weight decay by parameter name.
  // Default (empty): tensor i is the whole parameter names[i].
  AdamW(std::vector<at::Tensor> params, std::vector<std::string> names, AdamWOptions options,
        const std::vector<std::vector<ParamSlice>>& slices = {});

  // One update with learning rate `lr`. Parameters without a gradient are left unchanged.
  void Step(double lr);
  void ZeroGrad();

  // Clips the global L2 norm of all gradients to max_norm (when max_norm > 0) and returns the
  // norm before clipping, as torch.nn.utils.clip_grad_norm_ does (coefficient
  // max_norm / (norm + 1e-6), clamped to 1). Non-finite norms are returned unclipped.
  // With sharded parameters each rank holds a slice of every gradient: `sum_over_ranks` then
  // sums the local squared norm over the ranks, so the norm is the global one (collective).
  double ClipGradNorm(double max_norm, const std::function<double(double)>& sum_over_ranks = nullptr);

  // State for checkpoints: "exp_avg.<name>", "exp_avg_sq.<name>", "step.<name>".
  std::map<std::string, at::Tensor> StateDict() const;
  // Restores a StateDict. Throws dpo::Error naming the first missing or mis-shaped entry.
  void LoadStateDict(const std::map<std::string, at::Tensor>& state);

 private:
  std::vector<at::Tensor> params_;
  std::vector<std::string> names_;
  AdamWOptions options_;
  std::vector<at::Tensor> exp_avg_;
  std::vector<at::Tensor> exp_avg_sq_;
  std::vector<at::Tensor> step_;  // fp32 scalars on the parameter's device, as torch keeps them
  // Element ranges that weight decay applies to: (tensor, begin, end), adjacent ones merged.
  struct DecayRange {
    size_t tensor;
    int64_t begin, end;
  };
  std::vector<DecayRange> decayed_;
};

// Whether HF's Trainer decays a parameter of this name (see AdamWOptions).
bool HfDecaysParameter(const std::string& name);

}  // namespace dpo
