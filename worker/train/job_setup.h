// Everything a training run derives from its JobSpec before the first step: the device, the
// tokenizer, the prepared train/eval data and their batch plans, the policy and reference
// models and the learning-rate schedule (the loss options are the spec's own dpo section). The training loop
// (trainer.cc) asks this class for them, so the loop itself reads top to bottom.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "common/config/job_spec.h"
#include "common/data/prepared_dataset.h"
#include "common/loss/dpo_loss.h"
#include "common/loss/sequence_logps.h"
#include "common/tokenizer/tokenizer.h"
#include "worker/optim/lr_schedule.h"
#include "worker/shard/sharded_model.h"
#include "worker/train/pair_batch.h"

namespace dpo {

class CausalLM;
class ProcessGroup;
class ReferenceCache;
struct TrainerState;

// A model and where its weights come from. Built for sharding and loaded from a directory, its
// parameters are allocated on the CPU but never filled, and `source` reads each tensor when the
// ShardedModel cuts its slices out: no rank holds the whole model. Otherwise the parameters hold
// the weights and `source` is empty.
struct BuiltModel {
  std::shared_ptr<CausalLM> model;
  ParameterSource source;
};

struct EvalBatches {
  std::vector<PairBatch> batches;
  size_t real = 0;  // batches [0, real) are this rank's pairs; the rest are fillers
};

class JobSetup {
 public:
  // Resolves the device (cuda:<local_rank> for device cuda/auto with GPUs), loads the tokenizer
  // and prepares the data: rank 0 tokenizes into data.prepared_dir while the others wait, then
  // every rank maps the files. Collective: every rank constructs it.
  JobSetup(const JobSpec& spec, ProcessGroup& group, int local_rank);
  ~JobSetup();

  c10::Device device() const { return device_; }
  bool UseAutocast() const { return autocast_; }
  const DpoLossOptions& loss_options() const { return spec_.dpo; }
  const SequenceLogpsOptions& logps_options() const { return logps_options_; }
  ReferenceSection::Mode reference_mode() const { return spec_.reference.mode; }
  const std::string& tokenizer_dir() const { return tokenizer_dir_; }
  std::string MetricsPath() const;

  // The policy: `weights_dir` (a checkpoint's model/) or model.path loaded, or model.random
  // initialised; trainable, on `device`. Unfilled (see BuiltModel) when `for_sharding` and
  // loaded from a directory.
  BuiltModel BuildPolicy(c10::Device device, bool for_sharding,
                         const std::optional<std::string>& weights_dir = std::nullopt) const;
  // The frozen reference (eval mode, no grads) for modes model and precomputed: reference.path,
  // or else the initial policy, on `device`. Null model for mode none.
  BuiltModel BuildReference(c10::Device device, bool for_sharding) const;
  // What the reference's log-probs depend on: a hash of its config.json and weight files (of
  // the random config and seed for a random model). Reads every weight file: compute it once.
  uint64_t ReferenceIdentity() const;
  // Loads or computes the reference log-probs of `dataset` (see ReferenceCache), keyed by
  // `reference_identity` and the dataset. Collective.
  ReferenceCache Precompute(CausalLM* reference, uint64_t reference_identity, const PreparedDataset& dataset,
                            const std::string& split) const;

  const PreparedDataset& train_data() const { return *train_; }
  // The dataset eval pairs come from: the data.eval file, or train_data() when data.eval_fraction
  // holds pairs out of it; nullptr without eval data.
  const PreparedDataset* eval_data() const;
  bool eval_is_train_split() const { return eval_ == nullptr && !eval_subset_.empty(); }

  // Optimizer steps of the run: train.max_steps, or num_train_epochs over this rank's
  // optimizer steps per epoch, ceil(micro-batches per epoch / gradient_accumulation_steps), at
  // least 1 (HF's rule: a last step with fewer micro-batches counts).
  int64_t TotalSteps() const;
  LrSchedule Schedule(int64_t total_steps) const;
  double EpochProgress(const TrainerState& state) const;

  // Begins an optimizer step at data position (epoch, batch_in_epoch): moves to the next epoch
  // when this one is used up, and returns the micro-batches the step accumulates:
  // gradient_accumulation_steps, or the fewer left in the epoch (HF's last step of an epoch).
  // The same on every rank. Throws dpo::Error when an epoch holds no batch (drop_last with fewer
  // pairs than one global batch).
  int64_t BeginStep(int64_t& epoch, int64_t& batch_in_epoch);
  // The micro-batch at (epoch, batch_in_epoch), which then advances. Deterministic in (seed,
  // epoch): a resumed run continues with exactly the batches it would have seen.
  PairBatch NextTrainBatch(int64_t epoch, int64_t& batch_in_epoch);
  // This rank's share of the eval pairs, in batches of per_device_eval_batch_size, then
  // fillers so that every rank runs as many forwards (see PlanRankBatches).
  EvalBatches MakeEvalBatches() const;

  // The checkpoint to resume from, if output.resume_from_checkpoint names one.
  std::optional<std::string> ResumeCheckpoint() const;

 private:
  const std::vector<std::vector<uint32_t>>& PlanFor(int64_t epoch) const;

  const JobSpec& spec_;
  ProcessGroup& group_;
  c10::Device device_;
  bool autocast_ = false;
  CollateOptions collate_;
  std::string tokenizer_dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<PreparedDataset> train_, eval_;
  std::vector<uint32_t> train_subset_;  // dataset indices used for training (eval_fraction)
  std::vector<uint32_t> eval_subset_;   // indices into eval_ (or train_ with eval_fraction)
  SequenceLogpsOptions logps_options_;
  // The batch plan of one epoch, cached: PlanEpoch is deterministic in (seed, epoch).
  mutable int64_t planned_epoch_ = -1;
  mutable std::vector<std::vector<uint32_t>> plan_;
};

}  // namespace dpo
