#include "worker/comm/gradient_reducer.h"

#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/torch.h>

#include "common/util/error.h"

namespace dpo {

GradientReducer::GradientReducer(std::vector<at::Tensor> params, ProcessGroup& group, GradientReducerOptions options)
    : params_(std::move(params)), bucket_of_(params_.size()), group_(group) {
  Bucket bucket;
  size_t bucket_bytes = 0;
  for (size_t i = params_.size(); i-- > 0;) {
    const at::Tensor& p = params_[i];
    // A bucket holds one dtype and device, so it flattens into one buffer.
    if (!bucket.params.empty() &&
        (params_[bucket.params.front()].scalar_type() != p.scalar_type() ||
         params_[bucket.params.front()].device() != p.device() || bucket_bytes >= options.bucket_bytes)) {
      buckets_.push_back(std::move(bucket));
      bucket = Bucket{};
      bucket_bytes = 0;
    }
    bucket_of_[i] = buckets_.size();
    bucket.params.push_back(i);
    bucket_bytes += p.numel() * p.element_size();
  }
  if (!bucket.params.empty()) buckets_.push_back(std::move(bucket));
  ResetBuckets();
  if (group_.world_size() == 1) return;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].is_leaf() || !params_[i].requires_grad()) {
      Fail("GradientReducer", "parameter " + std::to_string(i) + " is not a leaf that requires grad");
    }
    auto accumulator = torch::autograd::impl::grad_accumulator(params_[i]);
    hook_keys_.push_back(accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list& /*inputs*/) {
          OnGradientReady(i);
          return outputs;
        })));
    accumulators_.push_back(std::move(accumulator));
  }
}

GradientReducer::~GradientReducer() {
  for (size_t i = 0; i < accumulators_.size(); ++i) accumulators_[i]->del_post_hook(hook_keys_[i]);
}

void GradientReducer::ResetBuckets() {
  for (Bucket& bucket : buckets_) {
    bucket.pending = bucket.params.size();
    bucket.buffer = at::Tensor();
    bucket.work.reset();
  }
  next_launch_ = 0;
  launched_in_backward_ = 0;
  first_launch_.reset();
}

// Runs on the thread executing backward (the caller's on the CPU; CUDA's autograd thread on the
// GPU), after the parameter's gradient has been accumulated into .grad.
void GradientReducer::OnGradientReady(size_t param) {
  if (!launch_during_backward_) return;
  Bucket& bucket = buckets_[bucket_of_[param]];
  if (bucket.pending == 0) {
    Fail("GradientReducer", "parameter " + std::to_string(param) +
                                " received a second gradient in one backward after its bucket "
                                "was complete");
  }
  --bucket.pending;
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    Launch(buckets_[next_launch_++]);
    ++launched_in_backward_;
  }
}

void GradientReducer::Launch(Bucket& bucket) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> flat_grads;
  flat_grads.reserve(bucket.params.size());
  for (size_t i : bucket.params) {
    const at::Tensor& g = params_[i].grad();
    flat_grads.push_back(g.defined() ? g.reshape(-1) : at::zeros({params_[i].numel()}, params_[i].options()));
  }
  bucket.buffer = at::cat(flat_grads);
  if (!first_launch_) first_launch_ = std::chrono::steady_clock::now();
  bucket.work = group_.AllReduceSumAsync(bucket.buffer);
}

void GradientReducer::AverageGradients() {
  if (group_.world_size() == 1) return;
  torch::NoGradGuard no_grad;
  const auto backward_done = std::chrono::steady_clock::now();
  const auto in_flight_since = first_launch_.value_or(backward_done);
  while (next_launch_ < buckets_.size()) Launch(buckets_[next_launch_++]);
  for (Bucket& bucket : buckets_) bucket.work->Wait();
  const c10::Device device = buckets_.back().buffer.device();
  if (device.is_cuda()) {
    // NCCL's Wait only orders the current stream after the collectives: wait for them here, so
    // the time measured is the collectives' (the host reads the gradient norm next anyway).
    c10::impl::VirtualGuardImpl(device.type()).getStream(device).synchronize();
  }
  const auto done = std::chrono::steady_clock::now();
  timing_.in_flight_seconds += std::chrono::duration<double>(done - in_flight_since).count();
  timing_.exposed_seconds += std::chrono::duration<double>(done - backward_done).count();
  ++timing_.steps;
  const double inverse_world = 1.0 / group_.world_size();
  for (Bucket& bucket : buckets_) {
    bucket.buffer.mul_(inverse_world);
    int64_t offset = 0;
    for (size_t i : bucket.params) {
      at::Tensor& p = params_[i];
      at::Tensor slice = bucket.buffer.narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(slice);
      } else {
        p.mutable_grad() = slice.clone();
      }
      offset += p.numel();
    }
  }
  ResetBuckets();
}

ReductionTiming GradientReducer::TakeTiming() {
  const ReductionTiming taken = timing_;
  timing_ = ReductionTiming{};
  return taken;
}

}  // namespace dpo
