// Sharded data parallelism for one CausalLM over a ProcessGroup, as ZeRO-2/3 and FSDP do it.
//
// Units. The model's parameters are grouped into units: one per decoder layer
// ("model.layers.N"), then "root" for the embedding, the final norm and lm_head. A unit's
// parameters, flattened in registration order and padded to a multiple of the world size W,
// form one flat buffer of W·S elements; rank r owns elements [r·S, (r+1)·S), its shard.
// The model's parameter tensors are views into the unit's gathered buffer, whose storage is
// allocated only while the unit is gathered.
//
// Modes (ShardingOptions::reshard_after_use):
//   false — ZeRO-2 (train.sharding: optimizer). Gathered buffers stay allocated: the compute
//     copy is whole on every rank. Gradients are reduce-scattered per layer during backward;
//     after the optimizer updated the master shards, AfterStep() all-gathers them back.
//   true — ZeRO-3 / FSDP FULL_SHARD (train.sharding: full). A layer is all-gathered just
//     before it runs, the next layer's gather is started (prefetched) while it computes, and it
//     is freed after; in backward the same happens in reverse order, and each layer's gradient
//     is reduce-scattered as soon as autograd has produced it. The root unit is gathered from
//     the first forward until AfterBackward() / EndForward().
// A trainable model keeps an fp32 (its own dtype) master shard per unit, a leaf whose .grad
// receives the rank-averaged gradient shard: give master_shards() to the optimizer. A frozen
// model (the reference) keeps only its shard in the compute dtype and runs forward only.
//
// Collective order rule: every rank must run the same forwards, backwards and calls on this
// class in the same order. Then every rank issues the same gathers and reduce-scatters in the
// same order: forward gathers the root, then layers 0..L-1 (each prefetch one ahead);
// backward reduce-scatters layers L-1..0 from autograd (prefetching gathers one behind);
// AfterBackward() reduce-scatters the root; AfterStep() gathers every unit in unit order.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace dpo {

class CausalLM;
class ProcessGroup;

struct ShardingOptions {
  // True: ZeRO-3 (free a unit's gathered weights after each use). False: ZeRO-2.
  // Default: true.
  bool reshard_after_use = true;
  // False: a frozen model (reference), forward only: no master, no gradients.
  // Default: true.
  bool trainable = true;
  // Dtype of gathered weights, the dtype compute sees. Default: undefined = the model's own.
  at::ScalarType compute_dtype = at::ScalarType::Undefined;
  // Dtype gradients are reduce-scattered in. Default: fp32 (no rounding of the sum).
  at::ScalarType reduce_dtype = at::kFloat;
  // Where shards and gathered weights live. Default: the CPU.
  c10::Device device = c10::Device(c10::kCPU);
};

// Where one parameter sits in its unit's flat buffer.
struct FlatParam {
  std::string name;  // as in named_parameters(): "model.layers.0.mlp.up_proj.weight"
  std::vector<int64_t> shape;
  int64_t offset = 0;  // first element in the unit's flat buffer
  int64_t numel = 0;
};

// One unit's layout: the same on every rank for a given world size.
struct UnitLayout {
  std::string name;  // "model.layers.N" or "root"
  std::vector<FlatParam> params;
  int64_t numel = 0;        // unpadded
  int64_t shard_numel = 0;  // S: ceil(numel / W)
};

// One parameter's part of a rank's shard: elements [param_begin, param_begin + length) of the
// flattened parameter sit at [shard_begin, shard_begin + length) of the shard.
struct ShardPiece {
  const FlatParam* param;
  int64_t shard_begin = 0, param_begin = 0, length = 0;
};
// The pieces of rank `rank`'s shard of `unit`, in order; the padding past the last is none.
std::vector<ShardPiece> ShardPieces(const UnitLayout& unit, int64_t rank);

// The full value of parameter `name` (any dtype, on the CPU), read when a shard needs it: one
// tensor at a time, so a rank never holds more than its shards and one whole tensor.
using ParameterSource = std::function<at::Tensor(const std::string& name)>;

class ShardedModel {
 public:
  // Takes over `model` and cuts this rank's shards out of the full weights, which are equal on
  // every rank: `source`'s, or, without one, the model's own parameters (any device). The full
  // parameters are released (with a source, the model's parameters may be allocated and never
  // written: untouched memory costs nothing). Installs itself as the model's LayerRunner.
  // Collective (in optimizer mode it gathers every unit). Throws dpo::Error when a source
  // tensor's shape differs from the parameter's.
  ShardedModel(std::shared_ptr<CausalLM> model, ProcessGroup& group, ShardingOptions options,
               const ParameterSource& source = nullptr);
  ~ShardedModel();
  ShardedModel(const ShardedModel&) = delete;
  ShardedModel& operator=(const ShardedModel&) = delete;

  CausalLM& model();
  std::vector<UnitLayout> layouts() const;
  // One leaf per unit: this rank's master shard [S] (trainable models only). Its .grad is the
  // sum of the micro-batches' rank-averaged gradients, as GradientReducer leaves them.
  const std::vector<at::Tensor>& master_shards() const;

  // After each micro-batch's backward: completes the layers' reduce-scatters, reduce-scatters
  // the root's gradients and frees what is gathered (ZeRO-3). Collective.
  void AfterBackward();
  // After the optimizer changed the master shards (ZeRO-2 gathers them into the compute copy).
  // Collective.
  void AfterStep();

  // The full fp32 (master dtype) values of unit `index`, gathered on every rank and moved to
  // the CPU, as {name, tensor} in the unit's parameter order: for checkpoints, one unit at a
  // time. Collective.
  std::vector<std::pair<std::string, at::Tensor>> GatherUnitForSave(size_t index);
  // Bytes this rank holds right now for the model's state: master shards and their gradients,
  // frozen shards, gathered weights, pending reduce-scatter buffers (counted from storages).
  int64_t ResidentBytes() const;
  // The most ResidentBytes() reached since the last call (sampled at every gather and
  // reduce-scatter, where it grows).
  int64_t TakePeakResidentBytes();
  // Seconds collectives kept compute waiting, and seconds they were in flight in total, since
  // the last call (both over gathers and reduce-scatters): the hidden share is 1 - wait/flight.
  std::pair<double, double> TakeCommunicationSeconds();

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace dpo
