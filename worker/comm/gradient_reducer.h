// Averages parameter gradients across data-parallel ranks, in buckets launched from autograd
// hooks while backward is still running (after c10d's Reducer).
//
// Parameters are grouped into buckets of about `bucket_bytes`, in reverse registration order,
// which is roughly the order backward produces their gradients. A hook on each parameter's
// gradient accumulator counts the bucket's gradients in; when a bucket is complete it is
// flattened into one buffer and its all-reduce starts (on NCCL's communication stream), so the
// last layers' gradients travel while backward still computes the first layers'. A model with
// hundreds of tensors costs a handful of collectives.
//
// Collective order rule: every rank builds the same buckets from the same parameter list and
// launches them strictly in bucket order: a complete bucket waits until every earlier bucket
// has gone out, whatever order its hooks fired in, and AverageGradients() launches the rest in
// the same order. So the collectives line up across ranks even when ranks differ in which
// parameters received gradients.
//
// Timing (for the per-rank metrics): per step, the reduction is in flight from the first
// bucket's launch (or AverageGradients()' start, when backward launched none) until the last
// bucket has completed; the exposed part starts when AverageGradients() is called, i.e. when
// backward has finished. What overlapped backward is the difference. Host clock: on NCCL,
// AverageGradients() synchronises the current stream with the collectives so that completion
// is real, which costs nothing in a step whose gradient norm is read on the host right after.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "worker/comm/process_group.h"

namespace torch::autograd {
struct Node;
}

namespace dpo {

// Seconds of gradient reduction summed over the steps since GradientReducer::TakeTiming().
struct ReductionTiming {
  double in_flight_seconds = 0;  // first launch (or AverageGradients' start) to last completion
  double exposed_seconds = 0;    // AverageGradients' start (backward done) to last completion
  int64_t steps = 0;             // AverageGradients() calls that reduced something

  // The share of the time in flight that backward hid: 1 - exposed / in flight; 0 without any.
  double HiddenFraction() const { return in_flight_seconds > 0 ? 1.0 - exposed_seconds / in_flight_seconds : 0.0; }
};

struct GradientReducerOptions {
  // Target bucket size. Default: 25 MiB, c10d's default: large enough to amortise collective
  // latency, small enough that the first buckets can go out early.
  size_t bucket_bytes = 25u << 20;
};

class GradientReducer {
 public:
  // `params` must be the same leaf tensors, in the same order, on every rank. The group must
  // outlive the reducer. With one rank nothing is hooked and AverageGradients() does nothing.
  GradientReducer(std::vector<at::Tensor> params, ProcessGroup& group, GradientReducerOptions options = {});
  ~GradientReducer();  // removes the hooks
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Whether the gradients the next backward leaves are final for this step, i.e. whether its
  // hooks launch collectives. Turn it off for all but the last micro-batch of a gradient
  // accumulation, whose gradients are still to be added to. Default: on.
  void SetLaunchDuringBackward(bool on) { launch_during_backward_ = on; }

  // Launches the buckets backward did not (a parameter without a gradient contributes zeros:
  // every rank must send the same bytes), waits for all, and replaces each parameter's .grad
  // with its mean over ranks. Call once per optimizer step, on every rank.
  void AverageGradients();

  size_t num_buckets() const { return buckets_.size(); }
  // Buckets launched from hooks since the last AverageGradients(): how much overlapped.
  size_t buckets_launched_during_backward() const { return launched_in_backward_; }
  // The reduction's timing since the last call (see the top of this file), and restarts it.
  ReductionTiming TakeTiming();

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    size_t pending = 0;          // gradients not yet accumulated in this backward
    at::Tensor buffer;           // flattened gradients while the all-reduce runs
    std::unique_ptr<CollectiveWork> work;
  };
  void OnGradientReady(size_t param);
  void Launch(Bucket& bucket);
  void ResetBuckets();

  std::vector<at::Tensor> params_;
  std::vector<size_t> bucket_of_;  // param index -> bucket index
  std::vector<Bucket> buckets_;
  size_t next_launch_ = 0;  // buckets_[0, next_launch_) are in flight
  size_t launched_in_backward_ = 0;
  bool launch_during_backward_ = true;
  // When this step's first bucket went out; unset until then.
  std::optional<std::chrono::steady_clock::time_point> first_launch_;
  ReductionTiming timing_;
  ProcessGroup& group_;
  // Gradient accumulators are held, so the hooked nodes outlive every graph, with their keys.
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<uintptr_t> hook_keys_;
};

}  // namespace dpo
