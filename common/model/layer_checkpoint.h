// Activation checkpointing for one block: forward runs without recording a graph; backward
// recomputes the block with grad enabled and backpropagates through the recomputation. LibTorch
// has no C++ checkpoint API, so this is a custom autograd function. The block must be
// deterministic (no dropout, no RNG), which holds for the decoder layers of common/model.
#pragma once

#include <functional>
#include <vector>

#include <torch/types.h>

namespace dpo {

// Returns block(x), with a backward that recomputes block(x) and yields gradients for x and
// for `params` (the tensors the block reads that may need gradients, e.g. its parameters).
// Other tensors the block captures (RoPE tables) receive no gradient. Without grad mode, or when
// neither x nor any param requires grad, this is just block(x).
torch::Tensor CheckpointedCall(const std::function<torch::Tensor(const torch::Tensor&)>& block, const torch::Tensor& x,
                               const std::vector<torch::Tensor>& params);

}  // namespace dpo
