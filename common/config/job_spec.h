// The job spec: one YAML file describes one DPO training job (docs/job_spec.md is the key
// reference). Sections: model, tokenizer, data, dpo, train, reference, output. Key names follow
// TRL 1.16's DPOConfig / transformers' TrainingArguments where those have the concept, with the
// same meaning and default, so a TRL user can carry a config over.
//
// Parsing validates everything at once: a bad spec throws JobSpecError listing every problem,
// one per line, as "<file>:<line>:<col>: <key path>: <what>" (unknown keys get a "did you mean"
// from the same or another section). Relative paths resolve against the spec file's directory.
// The parsed spec is "resolved": defaults that depend on other keys are filled in, so ToYaml()
// records exactly what a job ran with, and parsing that text gives back an equal JobSpec.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/loss/dpo_loss_options.h"
#include "common/util/error.h"

namespace dpo {

// A random-initialised model (tests, the demo): the architecture of an HF config.json.
struct RandomInit {
  std::string config;  // Required. Path to an HF config.json (e.g. a LlamaConfig).
  // Default: null in the file, resolved to train.seed, so one seed reproduces the whole run.
  int64_t seed = 42;

  bool operator==(const RandomInit&) const = default;
};

struct ModelSection {
  enum class Dtype { kFloat32, kBFloat16 };
  enum class Device { kAuto, kCpu, kCuda };

  // Exactly one of path / random. path: an HF model directory (config.json + *.safetensors).
  std::optional<std::string> path;
  std::optional<RandomInit> random;
  // Storage dtype of the parameters and of the optimizer's copy. Default: float32, so CPU runs
  // and small models train exactly; bf16 compute is train.bf16's job.
  Dtype dtype = Dtype::kFloat32;
  // Default: auto (CUDA when a GPU is visible, else CPU).
  Device device = Device::kAuto;

  bool operator==(const ModelSection&) const = default;
};

struct TokenizerSection {
  // Directory holding tokenizer.json (+ tokenizer_config.json), or the tokenizer.json itself.
  // Default: model.path (HF repos ship both together); required with model.random.
  std::string path;

  bool operator==(const TokenizerSection&) const = default;
};

struct DataSection {
  enum class ChatTemplate { kAuto, kChatml, kQwen3, kLlama3, kMistral };
  enum class Truncation { kKeepStart, kKeepEnd };
  enum class OnError { kFail, kSkip };
  enum class Sampling { kRandom, kGroupByLength, kSequential };
  enum class ImplicitPrompt { kAssistantTurn, kCommonPrefix };

  std::string train;                // Required. Preference pairs, .jsonl or .jsonl.gz.
  std::optional<std::string> eval;  // Default: none (see eval_fraction).
  // Fraction of train held out for evaluation when there is no eval file, in [0, 1).
  // Default: 0 (no evaluation), as TRL evaluates only when given an eval set.
  double eval_fraction = 0.0;
  // Chat template for conversational records (every TRL record form is recognised per line, so
  // there is no format key). Default: auto, recognised from the tokenizer's chat_template.
  ChatTemplate chat_template = ChatTemplate::kAuto;
  // Where an implicit text pair ({chosen, rejected} strings) splits into prompt and completions:
  // assistant_turn after the last shared "\n\nAssistant:" (whole replies), common_prefix as
  // TRL's extract_prompt (longest common prefix). Default: assistant_turn (docs/data.md).
  ImplicitPrompt implicit_prompt = ImplicitPrompt::kAssistantTurn;
  // Tokens per prompt+completion sequence; null = no truncation. Default: 1024 (TRL).
  std::optional<int64_t> max_length = 1024;
  // Tokens kept from the prompt (its end). Default: null, no separate limit (TRL 1.16).
  std::optional<int64_t> max_prompt_length;
  // Tokens kept from each completion (its start). Default: null, no separate limit (TRL 1.16).
  std::optional<int64_t> max_completion_length;
  // Which end of an over-long sequence survives. Default: keep_start (TRL 1.16).
  Truncation truncation_mode = Truncation::kKeepStart;
  // A malformed record fails the job, or is skipped and counted. Default: fail (no silent loss).
  OnError on_error = OnError::kFail;
  // Cache of the tokenized dataset. Default: null in the file, resolved to <output.dir>/prepared.
  std::string prepared_dir;
  // Seed of the epoch shuffles (HF data_seed). Default: null in the file, resolved to train.seed.
  int64_t shuffle_seed = 42;
  // Batch order (HF train_sampling_strategy). Default: random, as HF.
  Sampling train_sampling_strategy = Sampling::kRandom;
  // Preparation threads (TRL dataset_num_proc). Default: null = all cores.
  std::optional<int64_t> num_workers;
  // Pack each pair into one unit (chosen, then rejected without the prompt they share) and the
  // units into as few rows as fit, so padding costs no compute and each prompt is computed once.
  // Same numbers as padded batches up to float rounding. Default: true; TRL defaults to false
  // because its padding-free path needs flash-attention.
  bool padding_free = true;
  // Longest line read from a data file, in bytes: a longer one fails with file:line before the
  // rest of it is read, so memory stays bounded whatever the file holds. Default: 16 MiB.
  int64_t max_line_bytes = int64_t{16} << 20;

  bool operator==(const DataSection&) const = default;
};

struct TrainSection {
  enum class Scheduler { kLinear, kCosine, kConstant, kConstantWithWarmup };
  // How the policy's training state is spread over the ranks (worker/shard/sharded_model.h).
  enum class Sharding { kNone, kOptimizer, kFull };
  enum class ReduceDtype { kFloat32, kBFloat16 };

  int64_t seed = 42;                                 // Default: 42 (HF).
  int64_t per_device_train_batch_size = 8;           // Pairs per rank per micro-step. Default: 8 (HF).
  int64_t per_device_eval_batch_size = 8;            // Pairs per rank per eval step. Default: 8 (HF).
  int64_t gradient_accumulation_steps = 1;           // Micro-steps per optimizer step. Default: 1 (HF).
  double learning_rate = 1e-6;                       // Peak AdamW lr. Default: 1e-6 (TRL's DPO default).
  double weight_decay = 0.0;                         // Decoupled (AdamW). Default: 0 (HF).
  double adam_beta1 = 0.9;                           // Default: 0.9 (HF).
  double adam_beta2 = 0.999;                         // Default: 0.999 (HF).
  double adam_epsilon = 1e-8;                        // Default: 1e-8 (HF).
  double max_grad_norm = 1.0;                        // Global L2 clip; 0 = off. Default: 1.0 (HF).
  Scheduler lr_scheduler_type = Scheduler::kLinear;  // Default: linear (HF).
  // Linear warmup: steps when >= 1, a ratio of the total steps (ceil) when in [0, 1), as
  // transformers 5 reads warmup_steps. Default: 0.
  double warmup_steps = 0.0;
  double num_train_epochs = 1.0;  // Used when max_steps is -1. Default: 1 (fine-tuning usage).
  int64_t max_steps = -1;         // Optimizer steps; -1 = from num_train_epochs. Default: -1 (HF).
  // Drop the pairs of an epoch that do not fill a last batch (per rank and step: B x ranks).
  // false keeps them as HF does: one rank trains a last, partial batch; several ranks complete
  // the last global batch from the start of the epoch (accelerate's even_batches). The last step
  // of an epoch accumulates only the micro-batches left. Default: false (HF).
  bool dataloader_drop_last = false;
  int64_t logging_steps = 10;  // Metrics every N optimizer steps. Default: 10 (TRL).
  // Evaluate every N steps (and at the end). Default: null = only at the end, if there is eval data.
  std::optional<int64_t> eval_steps;
  int64_t save_steps = 500;  // Checkpoint every N steps (and at the end). Default: 500 (HF).
  // Checkpoints kept (oldest deleted). Default: null = keep all (HF).
  std::optional<int64_t> save_total_limit;
  // bf16 autocast for forward/backward. Default: null = on for CUDA, off for CPU (TRL: on).
  std::optional<bool> bf16;
  // Recompute activations in backward. Default: false (TRL: true) — speed over memory; the
  // chunked log-prob head already removes the largest activation.
  bool gradient_checkpointing = false;
  // Scored tokens per chunk of the log-prob head (bounds the [chunk, vocab] logits). Default: 512.
  int64_t logprob_chunk_size = 512;
  // Non-finite loss or gradient steps are skipped; this many in a row fail the job. Default: 10.
  int64_t max_consecutive_bad_steps = 10;
  // Longest a rank waits in one collective before the job fails with collective_timeout, naming
  // the rank it waited for (docs/worker_status.md); multi-rank runs only. Default: 1800 s, as
  // PyTorch c10d's NCCL default: a slow step or checkpoint must never trip it.
  double collective_timeout_seconds = 1800.0;
  // none: every rank holds the whole policy, its gradients and AdamW state (DDP). optimizer
  // (ZeRO-1/2): each rank keeps the fp32 master weights and AdamW moments of its 1/W slice;
  // gradients are reduce-scattered. full (ZeRO-3 / FSDP FULL_SHARD): parameters are sharded
  // at rest too, gathered one decoder layer at a time, and so is a reference model.
  // Default: none — on one node of a small model it is the fastest.
  Sharding sharding = Sharding::kNone;
  // Dtype gradients are reduce-scattered in (sharded modes), as FSDP2's reduce_dtype.
  // Default: float32, so the reduction adds no rounding of its own.
  ReduceDtype reduce_dtype = ReduceDtype::kFloat32;

  bool operator==(const TrainSection&) const = default;
};

struct ReferenceSection {
  // model: a frozen reference model runs beside the policy. precomputed: its log-probs are
  // computed once before training (TRL precompute_ref_log_probs) and the model is freed.
  // none: reference-free, reference log-probs are 0 (the old TRL reference_free=True).
  enum class Mode { kModel, kPrecomputed, kNone };

  Mode mode = Mode::kModel;  // Default: model (TRL).
  // HF model directory of the reference. Default: null = a frozen copy of the initial policy
  // (TRL with ref_model=None). Must be null with mode none.
  std::optional<std::string> path;
  // Pairs per batch when precomputing. Default: null = per_device_train_batch_size (TRL).
  std::optional<int64_t> precompute_batch_size;

  bool operator==(const ReferenceSection&) const = default;
};

struct OutputSection {
  std::string dir;  // Required. Checkpoints, metrics, the resolved spec.
  // A checkpoint directory, or "latest" (newest in dir). Default: null = fresh start.
  std::optional<std::string> resume_from_checkpoint;
  // JSON-lines metrics, relative to dir unless absolute. Default: metrics.jsonl.
  std::string metrics_file = "metrics.jsonl";

  bool operator==(const OutputSection&) const = default;
};

struct JobSpec {
  ModelSection model;
  TokenizerSection tokenizer;
  DataSection data;
  // The loss options themselves (common/loss/dpo_loss_options.h): the worker passes them to the
  // loss unchanged. reference_free is not a dpo key: it is resolved from reference.mode none.
  DpoLossOptions dpo;
  TrainSection train;
  ReferenceSection reference;
  OutputSection output;

  bool operator==(const JobSpec&) const = default;
};

// Thrown for an invalid spec: what() is every problem, one per line, each starting with the
// source name; problems() has the same lines, for callers that report them one by one.
class JobSpecError : public Error {
 public:
  explicit JobSpecError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// Parses and validates `yaml_text`. source_name prefixes every problem (a file name). Relative
// paths are joined to base_dir when it is non-empty, and kept as written otherwise.
JobSpec ParseJobSpec(const std::string& yaml_text, const std::string& source_name, const std::string& base_dir = "");

// Parses `yaml_text` as a spec's dpo section alone (a mapping of dpo.* keys), with the same code
// and checks as ParseJobSpec; reference_free stays false. For tools that test the loss.
DpoLossOptions ParseDpoSection(const std::string& yaml_text, const std::string& source_name);

// Reads `path` and parses it with base_dir = the file's absolute directory. Throws dpo::Error
// when the file cannot be read.
JobSpec LoadJobSpec(const std::string& path);

// Every key as YAML (nulls written out), in section order; ParseJobSpec of it equals `spec`.
std::string ToYaml(const JobSpec& spec);

// YAML spellings of the enums, as the spec writes them.
std::string_view ToString(ModelSection::Dtype v);
std::string_view ToString(ModelSection::Device v);
std::string_view ToString(DataSection::ChatTemplate v);
std::string_view ToString(DataSection::Truncation v);
std::string_view ToString(DataSection::OnError v);
std::string_view ToString(DataSection::Sampling v);
std::string_view ToString(DataSection::ImplicitPrompt v);
std::string_view ToString(TrainSection::Scheduler v);
std::string_view ToString(TrainSection::Sharding v);
std::string_view ToString(TrainSection::ReduceDtype v);
std::string_view ToString(ReferenceSection::Mode v);

}  // namespace dpo
