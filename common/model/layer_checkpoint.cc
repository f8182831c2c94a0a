#include "common/model/layer_checkpoint.h"

#include <torch/torch.h>

namespace dpo {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Keeps the block callable alive in the autograd context until backward runs.
struct BlockHolder : torch::CustomClassHolder {
  explicit BlockHolder(std::function<torch::Tensor(const torch::Tensor&)> f) : fn(std::move(f)) {}
  std::function<torch::Tensor(const torch::Tensor&)> fn;
};

struct Recompute : torch::autograd::Function<Recompute> {
  // Function::apply runs this with grad mode off, so no activations are recorded.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, torch::TensorList params,
                               const c10::intrusive_ptr<BlockHolder>& block) {
    std::vector<torch::Tensor> saved{x};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["block"] = c10::IValue::make_capsule(block);
    return block->fn(x);
  }

  // Returns one gradient per flattened forward input: x, each param, then none for the block.
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto block = c10::static_intrusive_pointer_cast<BlockHolder>(ctx->saved_data["block"].toCapsule());
    variable_list saved = ctx->get_saved_variables();
    torch::AutoGradMode grad_on(true);
    torch::Tensor x = saved[0].detach().requires_grad_(saved[0].requires_grad());
    torch::Tensor y = block->fn(x);

    // Differentiate only w.r.t. what needs a gradient; map results back to input positions.
    std::vector<torch::Tensor> wrt;
    std::vector<size_t> position;
    if (x.requires_grad()) {
      wrt.push_back(x);
      position.push_back(0);
    }
    for (size_t i = 1; i < saved.size(); ++i) {
      if (saved[i].requires_grad()) {
        wrt.push_back(saved[i]);
        position.push_back(i);
      }
    }
    variable_list grads(saved.size() + 1);  // + the block argument (no gradient)
    if (wrt.empty()) return grads;
    auto computed = torch::autograd::grad({y}, wrt, {grad_outputs[0]}, /*retain_graph=*/false,
                                          /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < wrt.size(); ++i) grads[position[i]] = computed[i];
    return grads;
  }
};

}  // namespace

torch::Tensor CheckpointedCall(const std::function<torch::Tensor(const torch::Tensor&)>& block, const torch::Tensor& x,
                               const std::vector<torch::Tensor>& params) {
  bool needs_grad = x.requires_grad();
  for (const auto& p : params) needs_grad = needs_grad || p.requires_grad();
  if (!torch::GradMode::is_enabled() || !needs_grad) return block(x);
  return Recompute::apply(x, torch::TensorList(params), c10::make_intrusive<BlockHolder>(block));
}

}  // namespace dpo
