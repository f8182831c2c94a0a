#include "worker/comm/gradient_reducer.h"

#include <torch/torch.h>

namespace dpo {

GradientReducer::GradientReducer(std::vector<at::Tensor> params, ProcessGroup& group,
                                 GradientReducerOptions options)
    : params_(std::move(params)), group_(group) {
  std::vector<size_t> bucket;
  size_t bucket_bytes = 0;
  for (size_t i = params_.size(); i-- > 0;) {
    const at::Tensor& p = params_[i];
    // A bucket holds one dtype and device, so it flattens into one buffer.
    if (!bucket.empty() && (params_[bucket.front()].scalar_type() != p.scalar_type() ||
                            params_[bucket.front()].device() != p.device() ||
                            bucket_bytes >= options.bucket_bytes)) {
      buckets_.push_back(std::move(bucket));
      bucket.clear();
      bucket_bytes = 0;
    }
    bucket.push_back(i);
    bucket_bytes += p.numel() * p.element_size();
  }
  if (!bucket.empty()) buckets_.push_back(std::move(bucket));
}

void GradientReducer::AverageGradients() {
  if (group_.world_size() == 1) return;
  torch::NoGradGuard no_grad;
  const double inverse_world = 1.0 / group_.world_size();
  for (const auto& bucket : buckets_) {
    std::vector<at::Tensor> flat_grads;
    flat_grads.reserve(bucket.size());
    for (size_t i : bucket) {
      const at::Tensor& g = params_[i].grad();
      flat_grads.push_back(g.defined() ? g.reshape(-1) : at::zeros({params_[i].numel()},
                                                                   params_[i].options()));
    }
    at::Tensor buffer = at::cat(flat_grads);
    group_.AllReduceSum(buffer);
    buffer.mul_(inverse_world);
    int64_t offset = 0;
    for (size_t i : bucket) {
      at::Tensor& p = params_[i];
      at::Tensor slice = buffer.narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(slice);
      } else {
        p.mutable_grad() = slice.clone();
      }
      offset += p.numel();
    }
  }
}

}  // namespace dpo
