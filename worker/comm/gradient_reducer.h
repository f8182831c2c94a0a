// Averages parameter gradients across data-parallel ranks, in buckets (after c10d's Reducer).
//
// Parameters are grouped into buckets of about `bucket_bytes`, in reverse registration order,
// which is the order backward produces their gradients. Each bucket is flattened into one
// contiguous buffer and all-reduced as a single collective, so a model with hundreds of
// tensors costs a handful of collectives.
//
// Collective order rule: every rank builds the same buckets from the same parameter list and
// calls AverageGradients() at the same steps, so the collectives line up across ranks.
#pragma once

#include <cstddef>
#include <vector>

#include <ATen/core/Tensor.h>

#include "worker/comm/process_group.h"

namespace dpo {

struct GradientReducerOptions {
  // Target bucket size. Default: 25 MiB, c10d's default: large enough to amortise collective
  // latency, small enough that the first buckets can go out early.
  size_t bucket_bytes = 25u << 20;
};

class GradientReducer {
 public:
  // `params` must be the same tensors, in the same order, on every rank. The group must
  // outlive the reducer.
  GradientReducer(std::vector<at::Tensor> params, ProcessGroup& group,
                  GradientReducerOptions options = {});

  // Replaces each parameter's .grad with its mean over ranks. A parameter without a gradient
  // contributes zeros (every rank must send the same bytes).
  void AverageGradients();

  size_t num_buckets() const { return buckets_.size(); }

 private:
  std::vector<at::Tensor> params_;
  std::vector<std::vector<size_t>> buckets_;  // indices into params_, reverse order
  ProcessGroup& group_;
};

}  // namespace dpo
