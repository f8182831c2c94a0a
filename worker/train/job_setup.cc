#include "worker/train/job_setup.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <thread>

#include <torch/torch.h>

#include "common/config/data_preparation.h"
#include "common/config/model_config.h"
#include "common/data/sampler.h"
#include "common/model/causal_lm.h"
#include "common/model/checkpoint_io.h"
#include "common/model/pretrained.h"
#include "common/tensor/device.h"
#include "common/util/error.h"
#include "common/util/hash.h"
#include "worker/comm/process_group.h"
#include "worker/train/checkpoint.h"
#include "worker/train/reference_cache.h"

namespace fs = std::filesystem;

namespace dpo {
namespace {

// Prepares `source` into prepared_dir (rank 0 only; the others wait), then maps it.
std::unique_ptr<PreparedDataset> Prepare(const Tokenizer& tokenizer, const std::string& source, const DataSection& data,
                                         ProcessGroup& group) {
  if (group.rank() == 0) {
    PrepareResult result = PrepareForSpec(tokenizer, data, source);
    std::fprintf(stderr, "%s %s: %s\n", result.reused ? "reused" : "prepared", source.c_str(),
                 result.report.Summary().c_str());
  }
  group.Barrier();
  auto dataset = std::make_unique<PreparedDataset>(PreparedPath(data, source));
  if (dataset->size() == 0) Fail(source, "no usable preference pairs after preparation");
  return dataset;
}

// config.json of each model the job builds: the policy's (its directory's, or model.random's
// file) and a reference directory's.
std::vector<std::string> ModelConfigPaths(const JobSpec& spec) {
  std::vector<std::string> paths = {spec.model.path ? (fs::path(*spec.model.path) / "config.json").string()
                                                    : spec.model.random->config};
  if (spec.reference.path) paths.push_back((fs::path(*spec.reference.path) / "config.json").string());
  return paths;
}

uint64_t ModelIdentityHash(const std::string& dir) {
  Hasher h;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "config.json" || name.ends_with(".safetensors")) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) h.Update(file.filename().string()).Update(HashFile(file.string()));
  return h.Digest();
}

}  // namespace

JobSetup::JobSetup(const JobSpec& spec, ProcessGroup& group, int local_rank)
    : spec_(spec), group_(group), device_(c10::kCPU) {
  device_ = ParseDevice(ToString(spec.model.device), "model.device", local_rank);
  autocast_ = spec.train.bf16.value_or(device_.is_cuda());
  torch::manual_seed(static_cast<uint64_t>(spec.train.seed));
  if (spec.train.per_device_train_batch_size <= 0) Fail("train.per_device_train_batch_size", "must be > 0");

  logps_options_.chunk_tokens = spec.train.logprob_chunk_size;

  tokenizer_dir_ = fs::is_directory(spec.tokenizer.path) ? spec.tokenizer.path
                                                         : fs::path(spec.tokenizer.path).parent_path().string();
  tokenizer_ = Tokenizer::Load(spec.tokenizer.path);
  // Before any data is prepared: every token id must have a row in each model's embedding.
  for (const std::string& config : ModelConfigPaths(spec)) {
    CheckVocabularyFits(*tokenizer_, spec.tokenizer.path, ModelConfig::FromJsonFile(config).vocab_size, config);
  }
  collate_.pad_id = tokenizer_->pad_id().value_or(tokenizer_->eos_id().value_or(0));
  // Batches cut sequences as the tokenize options say (one mapping from the spec for both).
  const TokenizeOptions tokenize = TokenizeOptionsFromSpec(spec.data);
  collate_.max_length = tokenize.max_length;
  collate_.truncation_mode = tokenize.truncation_mode;

  train_ = Prepare(*tokenizer_, spec.data.train, spec.data, group);
  for (uint32_t i = 0; i < train_->size(); ++i) train_subset_.push_back(i);
  if (spec.data.eval) {
    eval_ = Prepare(*tokenizer_, *spec.data.eval, spec.data, group);
    for (uint32_t i = 0; i < eval_->size(); ++i) eval_subset_.push_back(i);
  } else if (spec.data.eval_fraction > 0) {
    TrainEvalSplit split =
        SplitTrainEval(train_->size(), spec.data.eval_fraction, static_cast<uint64_t>(spec.data.shuffle_seed));
    if (split.train.empty()) Fail("data.eval_fraction", "leaves no training pairs");
    train_subset_ = std::move(split.train);
    eval_subset_ = std::move(split.eval);
  }
  if (train_subset_.size() < static_cast<size_t>(spec.train.per_device_train_batch_size * group.world_size())) {
    Fail(spec.data.train, "has " + std::to_string(train_subset_.size()) +
                              " training pairs, fewer than one global batch (" +
                              std::to_string(spec.train.per_device_train_batch_size * group.world_size()) + ")");
  }
}

JobSetup::~JobSetup() = default;

std::string JobSetup::MetricsPath() const {
  fs::create_directories(spec_.output.dir);
  fs::path file(spec_.output.metrics_file);
  return (file.is_absolute() ? file : fs::path(spec_.output.dir) / file).string();
}

const PreparedDataset* JobSetup::eval_data() const {
  if (eval_) return eval_.get();
  return eval_subset_.empty() ? nullptr : train_.get();
}

namespace {

BuiltModel LoadModel(const std::string& dir, torch::ScalarType dtype, c10::Device device, bool for_sharding) {
  if (!for_sharding) return {LoadPretrained(dir, dtype, device), nullptr};
  UnloadedPretrained opened = OpenPretrained(dir, dtype);
  return {opened.model,
          [weights = opened.weights, dtype](const std::string& name) { return weights->Read(name, dtype); }};
}

}  // namespace

BuiltModel JobSetup::BuildPolicy(c10::Device device, bool for_sharding,
                                 const std::optional<std::string>& weights_dir) const {
  const auto dtype = spec_.model.dtype == ModelSection::Dtype::kBFloat16 ? torch::kBFloat16 : torch::kFloat32;
  BuiltModel built;
  if (weights_dir || spec_.model.path) {
    built = LoadModel(weights_dir ? *weights_dir : *spec_.model.path, dtype, device, for_sharding);
  } else {
    built.model = RandomInit(ModelConfig::FromJsonFile(spec_.model.random->config),
                             static_cast<uint64_t>(spec_.model.random->seed), dtype, device);
  }
  built.model->SetActivationCheckpointing(spec_.train.gradient_checkpointing);
  built.model->train();
  return built;
}

BuiltModel JobSetup::BuildReference(c10::Device device, bool for_sharding) const {
  if (spec_.reference.mode == ReferenceSection::Mode::kNone) return {};
  const auto dtype = spec_.model.dtype == ModelSection::Dtype::kBFloat16 ? torch::kBFloat16 : torch::kFloat32;
  BuiltModel built = spec_.reference.path ? LoadModel(*spec_.reference.path, dtype, device, for_sharding)
                                          : BuildPolicy(device, for_sharding);
  built.model->SetActivationCheckpointing(false);
  for (auto& p : built.model->parameters()) p.set_requires_grad(false);
  built.model->eval();
  return built;
}

uint64_t JobSetup::ReferenceIdentity() const {
  if (spec_.reference.path || spec_.model.path) {
    return ModelIdentityHash(spec_.reference.path ? *spec_.reference.path : *spec_.model.path);
  }
  return Hasher()
      .Update(std::string("random"))
      .Update(HashFile(spec_.model.random->config))
      .Update(static_cast<uint64_t>(spec_.model.random->seed))
      .Digest();
}

ReferenceCache JobSetup::Precompute(CausalLM* reference, uint64_t reference_identity, const PreparedDataset& dataset,
                                    const std::string& split) const {
  const std::string path = (fs::path(spec_.data.prepared_dir) /
                            (split + "-" + ReferenceCache::FileName(reference_identity, dataset, spec_.dpo.ld_alpha)))
                               .string();
  const int64_t batch = spec_.reference.precompute_batch_size.value_or(spec_.train.per_device_train_batch_size);
  ReferenceCache cache = ReferenceCache::LoadOrCompute(path, reference, dataset, group_, batch, collate_,
                                                       spec_.data.padding_free, logps_options_, spec_.dpo.ld_alpha);
  if (group_.rank() == 0) {
    std::fprintf(stderr, "%s reference log-probs: %s\n", cache.computed() ? "computed" : "reused", path.c_str());
  }
  return cache;
}

const std::vector<std::vector<uint32_t>>& JobSetup::PlanFor(int64_t epoch) const {
  if (epoch == planned_epoch_) return plan_;
  SamplerOptions options;
  options.batch_size = static_cast<size_t>(spec_.train.per_device_train_batch_size);
  options.rank = group_.rank();
  options.world_size = group_.world_size();
  options.seed = static_cast<uint64_t>(spec_.data.shuffle_seed);
  options.shuffle = spec_.data.train_sampling_strategy != DataSection::Sampling::kSequential;
  options.group_by_length = spec_.data.train_sampling_strategy == DataSection::Sampling::kGroupByLength;
  options.drop_last = spec_.train.dataloader_drop_last;
  plan_ = PlanEpoch(train_subset_, options, static_cast<uint64_t>(epoch),
                    [&](uint32_t i) { return train_->max_sequence_length(i); });
  planned_epoch_ = epoch;
  return plan_;
}

int64_t JobSetup::BeginStep(int64_t& epoch, int64_t& batch_in_epoch) {
  if (batch_in_epoch >= static_cast<int64_t>(PlanFor(epoch).size())) {
    ++epoch;
    batch_in_epoch = 0;
  }
  const auto batches = static_cast<int64_t>(PlanFor(epoch).size());
  if (batches == 0) {
    Fail("train.dataloader_drop_last", std::to_string(train_subset_.size()) + " training pairs fill no batch of " +
                                           std::to_string(spec_.train.per_device_train_batch_size) +
                                           " pairs on each of " + std::to_string(group_.world_size()) +
                                           " ranks; set it false to keep them");
  }
  return std::min(spec_.train.gradient_accumulation_steps, batches - batch_in_epoch);
}

PairBatch JobSetup::NextTrainBatch(int64_t epoch, int64_t& batch_in_epoch) {
  const auto& plan = PlanFor(epoch);
  return MakePairBatch(*train_, plan.at(static_cast<size_t>(batch_in_epoch++)), collate_, device_,
                       spec_.data.padding_free);
}

EvalBatches JobSetup::MakeEvalBatches() const {
  const RankBatchPlan plan = PlanRankBatches(eval_subset_, group_.rank(), group_.world_size(),
                                             static_cast<size_t>(spec_.train.per_device_eval_batch_size));
  EvalBatches out;
  out.real = plan.real;
  for (const auto& pairs : plan.batches) {
    out.batches.push_back(MakePairBatch(*eval_data(), pairs, collate_, device_, spec_.data.padding_free));
  }
  return out;
}

int64_t JobSetup::TotalSteps() const {
  if (spec_.train.max_steps > 0) return spec_.train.max_steps;
  const int64_t batches = static_cast<int64_t>(PlanFor(0).size());
  const int64_t accumulation = spec_.train.gradient_accumulation_steps;
  const int64_t per_epoch = std::max<int64_t>(1, (batches + accumulation - 1) / accumulation);
  return static_cast<int64_t>(std::ceil(spec_.train.num_train_epochs * per_epoch));
}

LrSchedule JobSetup::Schedule(int64_t total_steps) const {
  LrSchedule schedule;
  schedule.type = spec_.train.lr_scheduler_type;
  schedule.peak_lr = spec_.train.learning_rate;
  schedule.total_steps = total_steps;
  const double warmup = spec_.train.warmup_steps;
  schedule.warmup_steps = warmup >= 1 ? static_cast<int64_t>(warmup) : WarmupStepsFromRatio(warmup, total_steps);
  return schedule;
}

double JobSetup::EpochProgress(const TrainerState& state) const {
  const double batches = static_cast<double>(PlanFor(state.epoch).size());
  return static_cast<double>(state.epoch) + static_cast<double>(state.batch_in_epoch) / batches;
}

std::optional<std::string> JobSetup::ResumeCheckpoint() const {
  if (!spec_.output.resume_from_checkpoint) return std::nullopt;
  return ResolveCheckpoint(*spec_.output.resume_from_checkpoint, spec_.output.dir);
}

}  // namespace dpo
