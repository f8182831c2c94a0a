#include "worker/shard/sharded_model.h"

#include <chrono>
#include <deque>
#include <optional>

#include <torch/torch.h>

#include "common/model/causal_lm.h"
#include "common/util/error.h"
#include "worker/comm/process_group.h"

namespace dpo {
namespace {

using Clock = std::chrono::steady_clock;

// "model.layers.12.mlp.up_proj.weight" -> 12; -1 for parameters outside the decoder layers.
int64_t LayerOf(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return -1;
  return std::stoll(name.substr(prefix.size(), name.find('.', prefix.size()) - prefix.size()));
}

// Allocates or frees a storage's memory in place. Tensors that view it (the model's
// parameters, and the tensors autograd saved from them) keep their storage object and see the
// new memory, which is how a layer freed after forward is used again in backward.
void AllocateStorage(const at::Tensor& buffer, size_t nbytes) {
  c10::StorageImpl* storage = buffer.storage().unsafeGetStorageImpl();
  if (storage->nbytes() == nbytes) return;
  storage->set_data_ptr_noswap(storage->allocator()->allocate(nbytes));
  storage->set_nbytes(nbytes);
}

void FreeStorage(const at::Tensor& buffer) {
  c10::StorageImpl* storage = buffer.storage().unsafeGetStorageImpl();
  storage->set_data_ptr_noswap(at::DataPtr(nullptr, buffer.device()));
  storage->set_nbytes(0);
}

// A collective in flight, timed: how long it was in flight and how long compute waited for it.
struct TimedWork {
  std::unique_ptr<CollectiveWork> work;
  Clock::time_point launched;
};

}  // namespace

std::vector<ShardPiece> ShardPieces(const UnitLayout& unit, int64_t rank) {
  const int64_t first = rank * unit.shard_numel;
  const int64_t last = std::min(first + unit.shard_numel, unit.numel);
  std::vector<ShardPiece> pieces;
  for (const FlatParam& p : unit.params) {
    const int64_t begin = std::max(first, p.offset), end = std::min(last, p.offset + p.numel);
    if (begin < end) pieces.push_back({&p, begin - first, begin - p.offset, end - begin});
  }
  return pieces;
}

class ShardedModel::Impl : public LayerRunner, public std::enable_shared_from_this<ShardedModel::Impl> {
 public:
  struct Unit {
    UnitLayout layout;
    std::vector<at::Tensor> params;  // the model's parameters, views into `gathered`
    at::Tensor gathered;             // [W·S] compute dtype; storage empty while resharded
    bool is_gathered = false;
    std::optional<TimedWork> gather;  // in flight
    at::Tensor gather_input;          // keeps the gather's send buffer alive
    at::Tensor master;                // [S] leaf, the model's dtype (trainable)
    at::Tensor frozen_shard;          // [S] compute dtype (frozen)
  };

  // A reduce-scatter in flight: its buffers and the unit whose master gradient it feeds.
  struct PendingScatter {
    size_t unit;
    at::Tensor input, output;
    TimedWork work;
  };

  Impl(std::shared_ptr<CausalLM> model, ProcessGroup& group, ShardingOptions options, const ParameterSource& source)
      : model_(std::move(model)), group_(group), options_(options) {
    torch::NoGradGuard no_grad;
    const int64_t world = group_.world_size(), rank = group_.rank();
    const auto& config = model_->config();
    units_.resize(static_cast<size_t>(config.num_hidden_layers) + 1);
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
      units_[static_cast<size_t>(i)].layout.name = "model.layers." + std::to_string(i);
    }
    units_.back().layout.name = "root";
    for (auto& item : model_->named_parameters()) {
      const int64_t layer = LayerOf(item.key());
      Unit& unit = layer < 0 ? units_.back() : units_[static_cast<size_t>(layer)];
      const at::Tensor& p = item.value();
      if (options_.compute_dtype == at::ScalarType::Undefined) options_.compute_dtype = p.scalar_type();
      master_dtype_ = p.scalar_type();
      unit.layout.params.push_back({item.key(), p.sizes().vec(), unit.layout.numel, p.numel()});
      unit.layout.numel += p.numel();
      unit.params.push_back(p);
    }
    for (Unit& unit : units_) {
      UnitLayout& layout = unit.layout;
      layout.shard_numel = (layout.numel + world - 1) / world;
      // This rank's slice of the flat parameters, zero past the end (padding), copied from
      // each parameter it overlaps: one whole tensor is read at a time.
      at::Tensor shard = torch::zeros(
          {layout.shard_numel}, at::TensorOptions().dtype(options.trainable ? master_dtype_ : options_.compute_dtype));
      for (const ShardPiece& piece : ShardPieces(layout, rank)) {
        const FlatParam& fp = *piece.param;
        const at::Tensor full = source ? source(fp.name) : unit.params[&fp - layout.params.data()];
        if (full.sizes().vec() != fp.shape) {
          Fail("ShardedModel", "parameter \"" + fp.name + "\" has shape " + c10::str(full.sizes()) + ", expected " +
                                   c10::str(c10::IntArrayRef(fp.shape)));
        }
        shard.narrow(0, piece.shard_begin, piece.length)
            .copy_(full.reshape(-1).narrow(0, piece.param_begin, piece.length));
      }
      shard = shard.to(options_.device);
      if (options_.trainable) {
        unit.master = shard.requires_grad_(true);
        masters_.push_back(unit.master);
      } else {
        unit.frozen_shard = shard;
      }
      unit.gathered = torch::empty({layout.shard_numel * world},
                                   at::TensorOptions().dtype(options_.compute_dtype).device(options_.device));
      for (size_t i = 0; i < unit.params.size(); ++i) {
        const FlatParam& fp = layout.params[i];
        // The parameter becomes a view into the gathered buffer (same tensor object, so the
        // model's members and named_parameters() follow).
        unit.params[i].set_data(unit.gathered.narrow(0, fp.offset, fp.numel).view(fp.shape));
      }
      FreeStorage(unit.gathered);
    }
    if (!options_.reshard_after_use) GatherAll();
  }

  ~Impl() override {
    // A destroyed model must not leave collectives behind its buffers.
    for (Unit& unit : units_) unit.gather.reset();
    scatters_.clear();
  }

  // ---- LayerRunner ---------------------------------------------------------------------------

  void BeginForward() override {
    Acquire(units_.size() - 1);
    // Prefetch the first layer while the embedding runs.
    if (units_.size() > 1) StartGather(0);
  }

  torch::Tensor Run(int64_t index, const Block& block, const torch::Tensor& x, bool checkpoint) override;

  // ---- Gathering -----------------------------------------------------------------------------

  void StartGather(size_t index) {
    Unit& unit = units_[index];
    if (unit.is_gathered || unit.gather) return;
    torch::NoGradGuard no_grad;
    AllocateStorage(unit.gathered, static_cast<size_t>(unit.gathered.numel() * unit.gathered.element_size()));
    const at::Tensor& source = options_.trainable ? unit.master : unit.frozen_shard;
    unit.gather_input = source.detach().to(options_.compute_dtype);
    unit.gather = TimedWork{group_.AllGatherAsync(unit.gather_input, unit.gathered), Clock::now()};
    NotePeak();
  }

  // Makes unit `index` usable: gathers it (or waits for its prefetch).
  void Acquire(size_t index) {
    StartGather(index);
    Unit& unit = units_[index];
    if (unit.gather) {
      Complete(*unit.gather);
      unit.gather.reset();
      unit.gather_input = at::Tensor();
      unit.is_gathered = true;
    }
  }

  void Release(size_t index) {
    Unit& unit = units_[index];
    if (!options_.reshard_after_use || !unit.is_gathered) return;
    FreeStorage(unit.gathered);
    unit.is_gathered = false;
  }

  // Gathers every unit, in unit order (ZeRO-2's compute copy after a step).
  void GatherAll() {
    for (size_t i = 0; i < units_.size(); ++i) {
      units_[i].is_gathered = false;
      StartGather(i);
    }
    for (size_t i = 0; i < units_.size(); ++i) Acquire(i);
  }

  // ---- Gradients -----------------------------------------------------------------------------

  // Flattens the gradients of unit `index` (undefined = zeros) and starts their reduce-scatter.
  // At most two stay in flight: older ones are completed into the masters, so backward never
  // holds more than a few layers' full gradients.
  void ReduceScatter(size_t index, const std::vector<at::Tensor>& grads) {
    torch::NoGradGuard no_grad;
    Unit& unit = units_[index];
    const int64_t world = group_.world_size();
    at::Tensor flat = torch::zeros({unit.layout.shard_numel * world},
                                   at::TensorOptions().dtype(options_.reduce_dtype).device(options_.device));
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!grads[i].defined()) continue;
      const FlatParam& fp = unit.layout.params[i];
      flat.narrow(0, fp.offset, fp.numel).copy_(grads[i].reshape(-1));
    }
    at::Tensor out = torch::empty({unit.layout.shard_numel}, flat.options());
    scatters_.push_back({index, flat, out, TimedWork{group_.ReduceScatterSumAsync(flat, out), Clock::now()}});
    NotePeak();
    while (scatters_.size() > 2) CompleteOldestScatter();
  }

  void CompleteOldestScatter() {
    torch::NoGradGuard no_grad;
    PendingScatter& s = scatters_.front();
    Complete(s.work);
    at::Tensor& master = units_[s.unit].master;
    at::Tensor mean = s.output.to(master.scalar_type()).mul_(1.0 / group_.world_size());
    if (master.grad().defined()) {
      master.mutable_grad().add_(mean);
    } else {
      master.mutable_grad() = mean;
    }
    scatters_.pop_front();
  }

  void AfterBackward() {
    Unit& root = units_.back();
    std::vector<at::Tensor> grads;
    for (at::Tensor& p : root.params) {
      grads.push_back(p.grad());
      p.mutable_grad().reset();
    }
    ReduceScatter(units_.size() - 1, grads);
    while (!scatters_.empty()) CompleteOldestScatter();
    Release(units_.size() - 1);
  }

  void EndForward() override { Release(units_.size() - 1); }

  void Complete(TimedWork& work) {
    const auto waiting = Clock::now();
    work.work->Wait();
    const auto done = Clock::now();
    wait_seconds_ += std::chrono::duration<double>(done - waiting).count();
    flight_seconds_ += std::chrono::duration<double>(done - work.launched).count();
  }

  std::vector<std::pair<std::string, at::Tensor>> GatherUnitForSave(size_t index) {
    torch::NoGradGuard no_grad;
    Unit& unit = units_[index];
    const at::Tensor& source = options_.trainable ? unit.master : unit.frozen_shard;
    at::Tensor full = torch::empty({unit.layout.shard_numel * group_.world_size()}, source.options());
    group_.AllGatherAsync(source.detach(), full)->Wait();
    full = full.cpu();
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const FlatParam& fp : unit.layout.params) {
      out.emplace_back(fp.name, full.narrow(0, fp.offset, fp.numel).view(fp.shape).clone());
    }
    return out;
  }

  // The most ResidentBytes() reached: sampled whenever a gather or reduce-scatter adds memory.
  void NotePeak() { peak_resident_bytes_ = std::max(peak_resident_bytes_, ResidentBytes()); }

  int64_t ResidentBytes() const {
    int64_t bytes = 0;
    auto add = [&](const at::Tensor& t) {
      if (t.defined()) bytes += static_cast<int64_t>(t.storage().nbytes());
    };
    for (const Unit& unit : units_) {
      add(unit.gathered);
      add(unit.master);
      if (unit.master.defined()) add(unit.master.grad());
      add(unit.frozen_shard);
      add(unit.gather_input);
    }
    for (const PendingScatter& s : scatters_) {
      add(s.input);
      add(s.output);
    }
    return bytes;
  }

  std::shared_ptr<CausalLM> model_;
  ProcessGroup& group_;
  ShardingOptions options_;
  at::ScalarType master_dtype_ = at::kFloat;
  std::vector<Unit> units_;
  std::vector<at::Tensor> masters_;
  std::deque<PendingScatter> scatters_;
  int64_t peak_resident_bytes_ = 0;
  double wait_seconds_ = 0, flight_seconds_ = 0;
};

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What one sharded layer call keeps between forward and backward.
struct LayerCall : torch::CustomClassHolder {
  std::shared_ptr<ShardedModel::Impl> owner;
  size_t unit = 0;
  LayerRunner::Block block;
  bool checkpoint = false;
  // Without checkpointing: the layer's own graph, built in forward and differentiated in
  // backward. It holds the activations, and views of the weights whose storage is freed in
  // between and gathered again before backward reads it.
  at::Tensor inner_x, inner_y;
};

// One decoder layer as an autograd function: gathers its weights around forward and backward
// and reduce-scatters its parameter gradients from backward.
struct ShardedLayerFunction : torch::autograd::Function<ShardedLayerFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const c10::intrusive_ptr<LayerCall>& call) {
    ShardedModel::Impl& owner = *call->owner;
    owner.Acquire(call->unit);
    if (call->unit + 2 < owner.units_.size()) owner.StartGather(call->unit + 1);  // prefetch
    at::Tensor y;
    if (call->checkpoint) {
      ctx->save_for_backward({x});
      y = call->block(x);  // Function::apply runs forward without grad: nothing is recorded
    } else {
      torch::AutoGradMode grad_on(true);
      call->inner_x = x.detach().requires_grad_(x.requires_grad());
      call->inner_y = call->block(call->inner_x);
      y = call->inner_y.detach();
    }
    owner.Release(call->unit);
    ctx->saved_data["call"] = c10::IValue::make_capsule(call);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto call = c10::static_intrusive_pointer_cast<LayerCall>(ctx->saved_data["call"].toCapsule());
    ShardedModel::Impl& owner = *call->owner;
    ShardedModel::Impl::Unit& unit = owner.units_[call->unit];
    owner.Acquire(call->unit);
    if (call->unit > 0) owner.StartGather(call->unit - 1);  // prefetch, backward runs in reverse
    at::Tensor x = call->inner_x, y = call->inner_y;
    if (call->checkpoint) {
      torch::AutoGradMode grad_on(true);
      const at::Tensor saved = ctx->get_saved_variables()[0];
      x = saved.detach().requires_grad_(saved.requires_grad());
      y = call->block(x);
    }
    std::vector<at::Tensor> wrt;
    if (x.requires_grad()) wrt.push_back(x);
    wrt.insert(wrt.end(), unit.params.begin(), unit.params.end());
    variable_list grads = torch::autograd::grad({y}, wrt, {grad_outputs[0]}, /*retain_graph=*/false,
                                                /*create_graph=*/false, /*allow_unused=*/true);
    call->inner_x = call->inner_y = at::Tensor();
    const size_t first_param = x.requires_grad() ? 1 : 0;
    owner.ReduceScatter(call->unit,
                        std::vector<at::Tensor>(grads.begin() + static_cast<std::ptrdiff_t>(first_param), grads.end()));
    owner.Release(call->unit);
    return {first_param == 1 ? grads[0] : at::Tensor(), at::Tensor()};
  }
};

}  // namespace

torch::Tensor ShardedModel::Impl::Run(int64_t index, const Block& block, const torch::Tensor& x, bool checkpoint) {
  const auto unit = static_cast<size_t>(index);
  if (!options_.trainable || !torch::GradMode::is_enabled()) {
    // Forward only (the reference, eval): gather, prefetch the next layer, run, free.
    Acquire(unit);
    if (unit + 2 < units_.size()) StartGather(unit + 1);
    at::Tensor y = block(x);
    Release(unit);
    return y;
  }
  auto call = c10::make_intrusive<LayerCall>();
  call->owner = shared_from_this();
  call->unit = unit;
  call->block = block;
  call->checkpoint = checkpoint;
  return ShardedLayerFunction::apply(x, call);
}

ShardedModel::ShardedModel(std::shared_ptr<CausalLM> model, ProcessGroup& group, ShardingOptions options,
                           const ParameterSource& source)
    : impl_(std::make_shared<Impl>(std::move(model), group, options, source)) {
  impl_->model_->SetLayerRunner(impl_);
}

ShardedModel::~ShardedModel() { impl_->model_->SetLayerRunner(nullptr); }

CausalLM& ShardedModel::model() { return *impl_->model_; }

std::vector<UnitLayout> ShardedModel::layouts() const {
  std::vector<UnitLayout> layouts;
  for (const auto& unit : impl_->units_) layouts.push_back(unit.layout);
  return layouts;
}

const std::vector<at::Tensor>& ShardedModel::master_shards() const { return impl_->masters_; }

void ShardedModel::AfterBackward() { impl_->AfterBackward(); }

void ShardedModel::AfterStep() {
  if (!impl_->options_.reshard_after_use) impl_->GatherAll();
}

std::vector<std::pair<std::string, at::Tensor>> ShardedModel::GatherUnitForSave(size_t index) {
  return impl_->GatherUnitForSave(index);
}

int64_t ShardedModel::ResidentBytes() const { return impl_->ResidentBytes(); }

int64_t ShardedModel::TakePeakResidentBytes() {
  const int64_t peak = std::max(impl_->peak_resident_bytes_, impl_->ResidentBytes());
  impl_->peak_resident_bytes_ = impl_->ResidentBytes();
  return peak;
}

std::pair<double, double> ShardedModel::TakeCommunicationSeconds() {
  std::pair<double, double> out{impl_->wait_seconds_, impl_->flight_seconds_};
  impl_->wait_seconds_ = impl_->flight_seconds_ = 0;
  return out;
}

}  // namespace dpo
