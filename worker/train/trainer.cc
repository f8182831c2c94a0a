#include "worker/train/trainer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#ifdef DPO_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "common/data/prepared_dataset.h"
#include "common/data/sampler.h"
#include "common/loss/dpo_loss.h"
#include "common/model/causal_lm.h"
#include "common/model/pretrained.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/error.h"
#include "common/util/hash.h"
#include "worker/comm/gradient_reducer.h"
#include "worker/comm/process_group.h"
#include "worker/optim/adamw.h"
#include "worker/optim/lr_schedule.h"
#include "worker/shard/shard_checkpoint.h"
#include "worker/shard/sharded_model.h"
#include "worker/train/checkpoint.h"
#include "worker/train/dpo_forward.h"
#include "worker/train/job_setup.h"
#include "worker/train/metrics_log.h"
#include "worker/train/pair_batch.h"
#include "worker/train/reference_cache.h"
#include "worker/train/step_result.h"

namespace fs = std::filesystem;

namespace dpo {
namespace {

// The parameters rank `rank`'s shard of `unit` holds, as element ranges of the shard.
std::vector<ParamSlice> ShardSlices(const UnitLayout& unit, int64_t rank) {
  std::vector<ParamSlice> slices;
  for (const ShardPiece& piece : ShardPieces(unit, rank)) {
    slices.push_back({piece.param->name, piece.shard_begin, piece.shard_begin + piece.length});
  }
  return slices;
}

// bf16 autocast for the forward and backward of one micro-batch (RAII).
class AutocastScope {
 public:
  AutocastScope(bool enabled, c10::DeviceType device) : enabled_(enabled), device_(device) {
    if (!enabled_) return;
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, at::kBFloat16);
  }
  ~AutocastScope() {
    if (!enabled_) return;
    at::autocast::set_autocast_enabled(device_, false);
    at::autocast::clear_cache();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_;
  c10::DeviceType device_;
};

// The sums a step or an evaluation adds up over its batches, kept on the device as one float64
// tensor [DpoMetricSums fields..., loss, pairs], so reading them costs one all-reduce and one
// device-to-host copy, not a synchronisation per batch and metric.
class DeviceSums {
 public:
  struct Totals {
    DpoMetricSums sums;
    double loss = 0, pairs = 0;
  };

  explicit DeviceSums(c10::Device device)
      : values_(torch::zeros({DpoMetricSums::kNumFields + 2}, torch::dtype(torch::kFloat64).device(device))) {}

  // Adds a batch's metric sums, its loss times `loss_weight`, and its pairs.
  void Add(const DpoLossResult& result, double loss_weight, int64_t pairs) {
    values_.narrow(0, 0, DpoMetricSums::kNumFields).add_(result.metric_sums);
    values_.narrow(0, kLoss, 1).add_(result.loss.detach().to(torch::kFloat64).reshape({1}) * loss_weight);
    values_.narrow(0, kPairs, 1).add_(static_cast<double>(pairs));
  }

  // The totals over every rank. Collective.
  Totals AllReduce(ProcessGroup& group) {
    if (group.world_size() > 1) group.AllReduceSum(values_);
    const at::Tensor host = values_.cpu();
    const double* v = host.data_ptr<double>();
    Totals totals;
    std::copy_n(v, DpoMetricSums::kNumFields, totals.sums.values.begin());
    totals.loss = v[kLoss];
    totals.pairs = v[kPairs];
    return totals;
  }

 private:
  static constexpr int64_t kLoss = DpoMetricSums::kNumFields, kPairs = DpoMetricSums::kNumFields + 1;
  at::Tensor values_;
};

// Peak memory of this rank so far, in bytes: the CUDA caching allocator's peak allocation on a
// GPU, the process's peak resident set on the CPU.
int64_t PeakMemoryBytes(c10::Device device) {
#ifdef DPO_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    return stats.allocated_bytes[aggregate].peak;
  }
#endif
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // ru_maxrss is in KiB
}

std::string RngStateHex() {
  at::Tensor state = at::detail::getDefaultCPUGenerator().get_state();
  std::ostringstream out;
  out << std::hex;
  const uint8_t* bytes = state.data_ptr<uint8_t>();
  for (int64_t i = 0; i < state.numel(); ++i) {
    out << static_cast<int>(bytes[i] >> 4) << static_cast<int>(bytes[i] & 15);
  }
  return out.str();
}

void SetRngStateHex(const std::string& hex) {
  if (hex.empty()) return;
  at::Tensor state = torch::empty({static_cast<int64_t>(hex.size() / 2)}, torch::kUInt8);
  uint8_t* bytes = state.data_ptr<uint8_t>();
  for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes[i / 2] = std::stoi(hex.substr(i, 2), nullptr, 16);
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  generator.set_state(state);
}

class Trainer {
 public:
  Trainer(const JobSpec& spec, ProcessGroup& group, int local_rank, const TrainHooks& hooks)
      : spec_(spec), group_(group), hooks_(hooks), setup_(spec, group, local_rank) {}

  TrainSummary Run() {
    const std::optional<std::string> resume = setup_.ResumeCheckpoint();
    TrainerState state = BuildModels(resume);
    BuildOptimizer(resume, state);
    const int64_t total_steps = setup_.TotalSteps();
    if (hooks_.on_progress) hooks_.on_progress(state.global_step, total_steps, {});
    const LrSchedule schedule = setup_.Schedule(total_steps);
    MetricsLog log(group_.rank() == 0 ? setup_.MetricsPath() : "", group_.rank() == 0 && ::isatty(2));
    TrainSummary summary;
    Window window;
    while (state.global_step < total_steps) {
      const StepResult step = Step(state, schedule);
      window.Add(step);
      if (step.skipped) continue;  // the same step number is tried with the next data
      log.Progress(state.global_step, total_steps, step.loss, LogValue(step.sums.Logs(), "rewards/accuracies"));
      if (AfterStep(state, total_steps, window, log, summary)) break;
    }
    log.Finish();
    summary.steps = state.global_step;
    summary.skipped_steps = state.skipped_steps;
    return summary;
  }

 private:
  // The policy (its weights from `resume` when resuming), the reference or its precomputed
  // log-probs, and the state to continue from. A model a ShardedModel takes over is built on the
  // CPU, unfilled when its weights are in a directory: each rank reads only its shards' slices,
  // and the device gets only the shards.
  TrainerState BuildModels(const std::optional<std::string>& resume) {
    const bool sharded = spec_.train.sharding != TrainSection::Sharding::kNone;
    const bool full = spec_.train.sharding == TrainSection::Sharding::kFull;
    const c10::Device cpu(c10::kCPU);
    BuiltModel reference = setup_.BuildReference(full ? cpu : setup_.device(), full);
    if (full && reference.model) {
      reference_shards_ = MakeSharded(reference.model, /*trainable=*/false, reference.source);
    }
    // A sharded run reads a resumed policy's weights from the checkpoint, slice by slice; a
    // replicated one copies them in below.
    const BuiltModel policy =
        setup_.BuildPolicy(sharded ? cpu : setup_.device(), sharded,
                           sharded && resume ? std::optional(CheckpointPaths(*resume).model_dir) : std::nullopt);
    policy_ = policy.model;
    TrainerState state;
    state.job_spec_yaml = ToYaml(spec_);
    if (resume) {
      // Weights now (replicated), optimizer state in BuildOptimizer.
      state = sharded ? LoadTrainerState(*resume) : LoadCheckpoint(*resume, *policy_).state;
      SetRngStateHex(state.rng_state_hex);
    } else if (spec_.model.random && group_.rank() == 0) {
      // A random-initialised policy exists nowhere else: keep it, as the reference for scoring
      // (dpo-eval --reference) and for later runs.
      SaveOptions options;
      options.tokenizer_dir = setup_.tokenizer_dir();
      SavePretrained(*policy_, (fs::path(spec_.output.dir) / "initial-policy").string(), options);
    }
    if (setup_.reference_mode() == ReferenceSection::Mode::kPrecomputed) {
      const uint64_t identity = setup_.ReferenceIdentity();
      train_cache_ = setup_.Precompute(reference.model.get(), identity, setup_.train_data(), "train");
      if (setup_.eval_data() != nullptr && !setup_.eval_is_train_split()) {
        eval_cache_ = setup_.Precompute(reference.model.get(), identity, *setup_.eval_data(), "eval");
      }
      reference_shards_.reset();
      reference.model.reset();  // training holds no reference model
    }
    reference_ = reference.model;
    if (sharded) policy_shards_ = MakeSharded(policy_, /*trainable=*/true, policy.source);
    return state;
  }

  // AdamW over what this rank steps: the whole parameters (with the gradient reducer), or its
  // master shard of each unit; its state loaded from `resume`, whatever mode and world size
  // wrote it.
  void BuildOptimizer(const std::optional<std::string>& resume, const TrainerState& state) {
    std::vector<std::string> names;
    std::vector<std::vector<int64_t>> shapes;
    std::vector<std::vector<ParamSlice>> slices;  // which parameters each master shard holds
    if (policy_shards_) {
      params_ = policy_shards_->master_shards();
      for (const UnitLayout& unit : policy_shards_->layouts()) {
        names.push_back(unit.name);
        slices.push_back(ShardSlices(unit, group_.rank()));
      }
    } else {
      for (auto& item : policy_->named_parameters()) {
        if (!item.value().requires_grad()) continue;
        names.push_back(item.key());
        shapes.push_back(item.value().sizes().vec());
        params_.push_back(item.value());
      }
      reducer_.emplace(params_, group_);
    }
    const auto& train = spec_.train;
    optimizer_ = std::make_unique<AdamW>(params_, names,
                                         AdamWOptions{.lr = train.learning_rate,
                                                      .beta1 = train.adam_beta1,
                                                      .beta2 = train.adam_beta2,
                                                      .eps = train.adam_epsilon,
                                                      .weight_decay = train.weight_decay},
                                         slices);
    if (resume) {
      const OptimizerStateReader reader(*resume);
      optimizer_->LoadStateDict(policy_shards_
                                    ? reader.ForShards(policy_shards_->layouts(), group_.rank(), setup_.device())
                                    : reader.ForParameters(names, shapes, setup_.device()));
      if (group_.rank() == 0) {
        std::fprintf(stderr, "resumed from %s at step %lld\n", resume->c_str(),
                     static_cast<long long>(state.global_step));
      }
    }
    for (const auto& [name, t] : optimizer_->StateDict()) {
      optimizer_bytes_ += static_cast<int64_t>(t.storage().nbytes());  // fixed in size
    }
  }

  // One optimizer step: each micro-batch's forward, loss and backward, the gradients reduced
  // and clipped, then AdamW's update; or, when the loss or the norm is not finite on any rank,
  // no update (every rank sees the same all-reduced values, so all skip together).
  StepResult Step(TrainerState& state, const LrSchedule& schedule) {
    const auto start = std::chrono::steady_clock::now();
    StepResult step;
    // gradient_accumulation_steps, or fewer at the end of an epoch; as HF, each micro-batch's
    // mean loss is divided by the micro-batches this step actually has.
    const int64_t accumulation = setup_.BeginStep(state.epoch, state.batch_in_epoch);
    DeviceSums sums(setup_.device());
    for (int64_t micro = 0; micro < accumulation; ++micro) {
      PairBatch batch = setup_.NextTrainBatch(state.epoch, state.batch_in_epoch);
      AutocastScope scope(setup_.UseAutocast(), setup_.device().type());
      SequenceLogps logps = ForwardLogps(*policy_, batch, setup_.logps_options());
      DpoLossResult result = ComputeDpoLoss(setup_.loss_options(), logps, ReferenceFor(batch, train_cache_));
      // Replicated: gradients are final only after the last micro-batch, so only its backward
      // launches the all-reduces, overlapping them with the rest of that backward. Sharded:
      // every backward reduce-scatters into the master shards' gradients.
      if (reducer_) reducer_->SetLaunchDuringBackward(micro == accumulation - 1);
      (result.loss / static_cast<double>(accumulation)).backward();
      if (policy_shards_) policy_shards_->AfterBackward();
      sums.Add(result, 1.0, batch.pairs);
      step.batches.Add(batch);
    }
    if (reducer_) reducer_->AverageGradients();
    const double max_norm = spec_.train.max_grad_norm;
    step.grad_norm = policy_shards_
                         ? optimizer_->ClipGradNorm(max_norm, [this](double v) { return group_.AllReduceScalar(v); })
                         : optimizer_->ClipGradNorm(max_norm);
    const DeviceSums::Totals totals = sums.AllReduce(group_);
    step.sums = totals.sums;
    step.loss = totals.loss / static_cast<double>(accumulation) / group_.world_size();
    step.lr = schedule.At(state.global_step);
    step.skipped = !std::isfinite(step.loss) || !std::isfinite(step.grad_norm);
    if (step.skipped) {
      optimizer_->ZeroGrad();
      ++state.skipped_steps;
      if (++state.consecutive_bad_steps >= spec_.train.max_consecutive_bad_steps) {
        Fail("training",
             std::to_string(state.consecutive_bad_steps) +
                 " consecutive steps with a non-finite loss or gradient (step " +
                 std::to_string(state.global_step + 1) + "); see train.max_consecutive_bad_steps",
             ErrorCode::kNonFinite);
      }
    } else {
      optimizer_->Step(step.lr);
      step.model_state_bytes = optimizer_bytes_ + PolicyStateBytes(/*peak=*/false);
      step.model_state_peak_bytes = optimizer_bytes_ + PolicyStateBytes(/*peak=*/true);
      optimizer_->ZeroGrad();
      if (policy_shards_) policy_shards_->AfterStep();
      state.consecutive_bad_steps = 0;
      ++state.global_step;
    }
    step.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return step;
  }

  // What follows a step that updated the model: the window's metrics line every logging_steps,
  // evaluation every eval_steps, a checkpoint every save_steps (each also at the last step),
  // and a checkpoint and a stop when any rank was asked to stop. Returns whether to stop.
  bool AfterStep(TrainerState& state, int64_t total_steps, Window& window, MetricsLog& log, TrainSummary& summary) {
    const auto& train = spec_.train;
    const bool last = state.global_step == total_steps;
    if (state.global_step % train.logging_steps == 0 || last) {
      summary.last_loss = window.loss / window.steps;
      WriteTrainLine(log, state, window, reducer_ ? reducer_->TakeTiming() : ReductionTiming{});
      window = Window{};
    }
    if (setup_.eval_data() != nullptr && ((train.eval_steps && state.global_step % *train.eval_steps == 0) || last)) {
      Evaluate(log, state);
    }
    const bool saved = state.global_step % train.save_steps == 0 || last;
    if (saved) summary.last_checkpoint = Save(state);
    if (last || !StopAgreed()) return false;
    if (!saved) summary.last_checkpoint = Save(state);
    summary.interrupted = true;
    return true;
  }

  static double LogValue(const std::vector<std::pair<std::string, double>>& logs, const std::string& name) {
    for (const auto& [key, value] : logs) {
      if (key == name) return value;
    }
    return 0.0;
  }

  // Whether any rank was asked to stop: one all-reduce, so every rank stops at the same step.
  bool StopAgreed() {
    if (!hooks_.stop_requested) return false;
    return group_.AllReduceScalar(hooks_.stop_requested() ? 1.0 : 0.0) > 0;
  }

  std::optional<ReferenceLogps> ReferenceFor(const PairBatch& batch, const std::optional<ReferenceCache>& cache) {
    switch (setup_.reference_mode()) {
      case ReferenceSection::Mode::kNone: return std::nullopt;
      case ReferenceSection::Mode::kPrecomputed: return cache->Lookup(batch.pair_indices, setup_.device());
      case ReferenceSection::Mode::kModel: break;
    }
    AutocastScope scope(setup_.UseAutocast(), setup_.device().type());
    return ReferenceForward(*reference_, batch, setup_.logps_options(), spec_.dpo.ld_alpha);
  }

  // `reduction`: the replicated gradient all-reduce's timing over the window (none if sharded).
  void WriteTrainLine(MetricsLog& log, const TrainerState& state, const Window& w, ReductionTiming reduction) {
    std::map<std::string, double> line;
    for (const auto& [key, value] : w.sums.Logs()) line[key] = value;
    // Metric sums cover all ranks; token counts are this rank's, scaled by the world size
    // (every rank runs the same number of equally sized batches).
    const double world = group_.world_size();
    line["loss"] = w.loss / w.steps;
    line["grad_norm"] = w.grad_norm / w.steps;
    line["learning_rate"] = w.lr;
    line["tokens/s"] = w.batches.real_tokens * world / w.seconds;
    line["pairs/s"] = w.batches.pairs * world / w.seconds;
    line["padding_fraction"] = 1.0 - static_cast<double>(w.batches.filled_cells) / w.batches.cells;
    line["skipped_steps"] = static_cast<double>(state.skipped_steps);
    const int64_t peak_memory_bytes = PeakMemoryBytes(setup_.device());
    line["peak_memory_gib"] = static_cast<double>(peak_memory_bytes) / (1 << 30);
    line["model_state_bytes"] = static_cast<double>(w.model_state_bytes);
    line["model_state_peak_bytes"] = static_cast<double>(w.model_state_peak_bytes);
    if (policy_shards_) {
      // Share of the gathers' and reduce-scatters' time in flight that compute did not wait for.
      const auto [waited, in_flight] = policy_shards_->TakeCommunicationSeconds();
      line["comm_hidden_fraction"] = in_flight > 0 ? 1.0 - waited / in_flight : 1.0;
      reduction = {.in_flight_seconds = in_flight, .exposed_seconds = waited, .steps = w.steps};
    }
    log.Write(state.global_step, setup_.EpochProgress(state), "train", line);
    if (hooks_.on_progress) hooks_.on_progress(state.global_step, setup_.TotalSteps(), line);
    if (hooks_.on_rank_metrics) {
      // This rank's own figures: its tokens, not scaled by the world size.
      RankMetrics rank;
      rank.step = state.global_step;
      rank.step_seconds = w.seconds / w.all_steps;
      rank.tokens_per_second = w.batches.real_tokens / w.seconds;
      if (reduction.steps > 0) {
        rank.comm_seconds = reduction.in_flight_seconds / reduction.steps;
        if (reduction.in_flight_seconds > 0) rank.comm_hidden_ratio = reduction.HiddenFraction();
      }
      rank.peak_memory_bytes = peak_memory_bytes;
      rank.skipped_steps = state.skipped_steps;
      hooks_.on_rank_metrics(rank);
    }
  }

  void Evaluate(MetricsLog& log, const TrainerState& state) {
    torch::NoGradGuard no_grad;
    DeviceSums sums(setup_.device());
    const EvalBatches eval = setup_.MakeEvalBatches();
    for (size_t b = 0; b < eval.batches.size(); ++b) {
      const PairBatch& batch = eval.batches[b];
      AutocastScope scope(setup_.UseAutocast(), setup_.device().type());
      SequenceLogps logps = ForwardLogps(*policy_, batch, setup_.logps_options());
      DpoLossResult result = ComputeDpoLoss(
          setup_.loss_options(), logps, ReferenceFor(batch, setup_.eval_is_train_split() ? train_cache_ : eval_cache_));
      policy_->EndForward();
      if (b >= eval.real) continue;  // a filler: keeps a sharded policy's collectives in step
      sums.Add(result, static_cast<double>(batch.pairs), batch.pairs);
    }
    const DeviceSums::Totals totals = sums.AllReduce(group_);
    std::map<std::string, double> line;
    for (const auto& [key, value] : totals.sums.Logs()) line["eval_" + key] = value;
    line["eval_loss"] = totals.pairs > 0 ? totals.loss / totals.pairs : 0.0;
    log.Write(state.global_step, setup_.EpochProgress(state), "eval", line);
  }

  std::string Save(TrainerState& state) {
    state.rng_state_hex = RngStateHex();
    std::string dir;
    if (policy_shards_) {
      dir = SaveShardedCheckpoint(spec_.output.dir, *policy_shards_, optimizer_->StateDict(), state,
                                  setup_.tokenizer_dir(), std::string(ToString(spec_.train.sharding)), group_);
    } else if (group_.rank() == 0) {
      dir = SaveCheckpoint(spec_.output.dir, *policy_, optimizer_->StateDict(), state, setup_.tokenizer_dir());
    }
    if (group_.rank() == 0 && spec_.train.save_total_limit) {
      PruneCheckpoints(spec_.output.dir, *spec_.train.save_total_limit);
    }
    group_.Barrier();
    return dir;
  }

  std::unique_ptr<ShardedModel> MakeSharded(std::shared_ptr<CausalLM> model, bool trainable,
                                            const ParameterSource& source) {
    ShardingOptions options;
    options.reshard_after_use = spec_.train.sharding == TrainSection::Sharding::kFull;
    options.trainable = trainable;
    // FSDP2's MixedPrecisionPolicy: weights gathered (and computed) in bf16, fp32 masters.
    if (setup_.UseAutocast()) options.compute_dtype = at::kBFloat16;
    options.reduce_dtype =
        spec_.train.reduce_dtype == TrainSection::ReduceDtype::kBFloat16 ? at::kBFloat16 : at::kFloat;
    options.device = setup_.device();
    return std::make_unique<ShardedModel>(std::move(model), group_, options, source);
  }

  // Bytes of the policy's parameters and gradients on this rank, from the tensors' storages: the
  // optimizer's parameters, or a sharded model's masters, gathered units and buffers, now or
  // (`peak`) the most they reached since the last call.
  int64_t PolicyStateBytes(bool peak) const {
    if (policy_shards_) {
      return peak ? policy_shards_->TakePeakResidentBytes() : policy_shards_->ResidentBytes();
    }
    int64_t bytes = 0;
    for (const at::Tensor& p : params_) {
      bytes += static_cast<int64_t>(p.storage().nbytes());
      if (p.grad().defined()) bytes += static_cast<int64_t>(p.grad().storage().nbytes());
    }
    return bytes;
  }

  const JobSpec& spec_;
  ProcessGroup& group_;
  const TrainHooks& hooks_;
  JobSetup setup_;
  std::shared_ptr<CausalLM> policy_;
  std::shared_ptr<CausalLM> reference_;
  // Declared after the models they shard, so they are destroyed first.
  std::unique_ptr<ShardedModel> policy_shards_;
  std::unique_ptr<ShardedModel> reference_shards_;
  std::optional<ReferenceCache> train_cache_, eval_cache_;
  // What the optimizer steps: the whole parameters, or this rank's master shard of each unit.
  std::vector<at::Tensor> params_;
  std::optional<GradientReducer> reducer_;  // replicated runs only
  std::unique_ptr<AdamW> optimizer_;
  int64_t optimizer_bytes_ = 0;  // AdamW's moments and step counters
};

}  // namespace

TrainSummary RunTraining(const JobSpec& spec, ProcessGroup& group, int local_rank, const TrainHooks& hooks) {
  return Trainer(spec, group, local_rank, hooks).Run();
}

}  // namespace dpo
