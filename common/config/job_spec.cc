#include "common/config/job_spec.h"

#include <yaml-cpp/anchor.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "common/config/spec_reader.h"
#include "common/config/suggest.h"

namespace dpo {
namespace {

using Loss = LossType;

// ---- Enum spellings --------------------------------------------------------------------------

constexpr EnumName<ModelSection::Dtype> kDtypes[] = {{ModelSection::Dtype::kFloat32, "float32"},
                                                     {ModelSection::Dtype::kBFloat16, "bfloat16"}};
constexpr EnumName<ModelSection::Device> kDevices[] = {
    {ModelSection::Device::kAuto, "auto"}, {ModelSection::Device::kCpu, "cpu"}, {ModelSection::Device::kCuda, "cuda"}};
constexpr EnumName<DataSection::ChatTemplate> kChatTemplates[] = {{DataSection::ChatTemplate::kAuto, "auto"},
                                                                  {DataSection::ChatTemplate::kChatml, "chatml"},
                                                                  {DataSection::ChatTemplate::kQwen3, "qwen3"},
                                                                  {DataSection::ChatTemplate::kLlama3, "llama3"},
                                                                  {DataSection::ChatTemplate::kMistral, "mistral"}};
constexpr EnumName<DataSection::Truncation> kTruncations[] = {{DataSection::Truncation::kKeepStart, "keep_start"},
                                                              {DataSection::Truncation::kKeepEnd, "keep_end"}};
constexpr EnumName<DataSection::OnError> kOnErrors[] = {{DataSection::OnError::kFail, "fail"},
                                                        {DataSection::OnError::kSkip, "skip"}};
constexpr EnumName<DataSection::Sampling> kSamplings[] = {{DataSection::Sampling::kRandom, "random"},
                                                          {DataSection::Sampling::kGroupByLength, "group_by_length"},
                                                          {DataSection::Sampling::kSequential, "sequential"}};
constexpr EnumName<DataSection::ImplicitPrompt> kImplicitPrompts[] = {
    {DataSection::ImplicitPrompt::kAssistantTurn, "assistant_turn"},
    {DataSection::ImplicitPrompt::kCommonPrefix, "common_prefix"}};
constexpr EnumName<TrainSection::Scheduler> kSchedulers[] = {
    {TrainSection::Scheduler::kLinear, "linear"},
    {TrainSection::Scheduler::kCosine, "cosine"},
    {TrainSection::Scheduler::kConstant, "constant"},
    {TrainSection::Scheduler::kConstantWithWarmup, "constant_with_warmup"}};
constexpr EnumName<TrainSection::Sharding> kShardings[] = {{TrainSection::Sharding::kNone, "none"},
                                                           {TrainSection::Sharding::kOptimizer, "optimizer"},
                                                           {TrainSection::Sharding::kFull, "full"}};
constexpr EnumName<TrainSection::ReduceDtype> kReduceDtypes[] = {{TrainSection::ReduceDtype::kFloat32, "float32"},
                                                                 {TrainSection::ReduceDtype::kBFloat16, "bfloat16"}};
constexpr EnumName<ReferenceSection::Mode> kModes[] = {{ReferenceSection::Mode::kModel, "model"},
                                                       {ReferenceSection::Mode::kPrecomputed, "precomputed"},
                                                       {ReferenceSection::Mode::kNone, "none"}};

// ---- Schema: every key, by section ------------------------------------------------------------

struct SectionKeys {
  std::string path;  // "" is the top level
  std::vector<std::string> keys;
};

const std::vector<SectionKeys>& Schema() {
  static const std::vector<SectionKeys> schema = {
      {"", {"model", "tokenizer", "data", "dpo", "train", "reference", "output"}},
      {"model", {"path", "random", "dtype", "device"}},
      {"model.random", {"config", "seed"}},
      {"tokenizer", {"path"}},
      {"data",
       {"train", "eval", "eval_fraction", "chat_template", "implicit_prompt", "max_length", "max_prompt_length",
        "max_completion_length", "truncation_mode", "on_error", "prepared_dir", "shuffle_seed",
        "train_sampling_strategy", "num_workers", "padding_free", "max_line_bytes"}},
      {"dpo",
       {"beta", "loss_type", "loss_weights", "label_smoothing", "f_divergence_type", "f_alpha_divergence_coef",
        "ld_alpha", "use_weighting", "discopop_tau", "simpo_gamma"}},
      {"train",
       {"seed",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "weight_decay",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "max_grad_norm",
        "lr_scheduler_type",
        "warmup_steps",
        "num_train_epochs",
        "max_steps",
        "dataloader_drop_last",
        "logging_steps",
        "eval_steps",
        "save_steps",
        "save_total_limit",
        "bf16",
        "gradient_checkpointing",
        "logprob_chunk_size",
        "max_consecutive_bad_steps",
        "sharding",
        "reduce_dtype",
        "collective_timeout_seconds"}},
      {"reference", {"mode", "path", "precompute_batch_size"}},
      {"output", {"dir", "resume_from_checkpoint", "metrics_file"}},
  };
  return schema;
}

const SectionKeys& SectionOf(const std::string& path) {
  for (const SectionKeys& s : Schema()) {
    if (s.path == path) return s;
  }
  throw std::logic_error("job spec: no schema for section " + path);
}

std::string Join(const std::string& section, const std::string& key) {
  return section.empty() ? key : section + "." + key;
}

// Names used by TRL/HF or other trainers for a key we spell differently; edit distance cannot
// find these ("lr" is far from "learning_rate").
const std::map<std::string, std::string>& Aliases() {
  static const std::map<std::string, std::string> aliases = {
      {"lr", "train.learning_rate"},
      {"batch_size", "train.per_device_train_batch_size"},
      {"train_batch_size", "train.per_device_train_batch_size"},
      {"micro_batch_size", "train.per_device_train_batch_size"},
      {"eval_batch_size", "train.per_device_eval_batch_size"},
      {"epochs", "train.num_train_epochs"},
      {"drop_last", "train.dataloader_drop_last"},
      {"num_epochs", "train.num_train_epochs"},
      {"grad_accum", "train.gradient_accumulation_steps"},
      {"gradient_accumulation", "train.gradient_accumulation_steps"},
      {"warmup_ratio", "train.warmup_steps"},
      {"warmup", "train.warmup_steps"},
      {"scheduler", "train.lr_scheduler_type"},
      {"lr_scheduler", "train.lr_scheduler_type"},
      {"grad_clip", "train.max_grad_norm"},
      {"clip_grad_norm", "train.max_grad_norm"},
      {"activation_checkpointing", "train.gradient_checkpointing"},
      {"output_dir", "output.dir"},
      {"model_name_or_path", "model.path"},
      {"torch_dtype", "model.dtype"},
      {"tokenizer_name_or_path", "tokenizer.path"},
      {"precompute_ref_log_probs", "reference.mode"},
      {"precompute_ref_batch_size", "reference.precompute_batch_size"},
      {"reference_free", "reference.mode"},
      {"ref_model", "reference.path"},
      {"loss", "dpo.loss_type"},
      {"losses", "dpo.loss_type"},
      {"dataset_num_proc", "data.num_workers"},
      {"data_seed", "data.shuffle_seed"},
      {"group_by_length", "data.train_sampling_strategy"},
      {"max_seq_length", "data.max_length"},
      {"train_file", "data.train"},
      {"eval_file", "data.eval"},
  };
  return aliases;
}

// The key path most likely meant by `key`, found unknown in `section`.
std::optional<std::string> SuggestKey(const std::string& section, const std::string& key) {
  if (auto it = Aliases().find(key); it != Aliases().end()) return it->second;
  std::optional<std::string> best;
  size_t best_distance = TypoBudget(key) + 1;
  auto consider = [&](const std::string& path, const std::string& candidate) {
    const size_t d = EditDistance(key, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = path;
    }
  };
  // The key's own section first, so it wins ties against other sections.
  for (const std::string& k : SectionOf(section).keys) consider(Join(section, k), k);
  for (const SectionKeys& s : Schema()) {
    if (s.path == section) continue;
    for (const std::string& k : s.keys) consider(Join(s.path, k), k);
  }
  return best;
}

// ---- Parsing ----------------------------------------------------------------------------------

// One section of the spec: typed reads of its keys, then Finish() reports the unknown ones.
// Absent keys keep the caller's default; `key: null` is accepted only by optional fields.
class Section {
 public:
  Section(SpecReader& r, const std::optional<YAML::Node>& node, const std::string& path)
      : r_(r), map_(r, node.value_or(YAML::Node()), path), keys_(SectionOf(path)) {}

  // The raw value of `key`, a null node for `key:`; nullopt when absent.
  std::optional<YAML::Node> Node(const std::string& key) { return Take(key); }
  // The raw value of `key`; nullopt when absent or null.
  std::optional<YAML::Node> Value(const std::string& key) {
    std::optional<YAML::Node> node = Take(key);
    if (node && node->IsNull()) return std::nullopt;
    return node;
  }
  std::string Path(const std::string& key) const { return map_.KeyPath(key); }

  // Reports "required" when `key` is absent or null; true when it has a value.
  bool Required(const std::string& key) {
    if (Value(key)) return true;
    r_.Problem(Path(key), "required");
    return false;
  }

  template <typename T, typename Read>
  bool Get(const std::string& key, T* out, Read read) {
    std::optional<YAML::Node> node = Take(key);
    if (!node) return false;
    std::optional<T> value = read(*node, Path(key));
    if (value) *out = *value;
    return value.has_value();
  }
  template <typename T, typename Read>
  bool Get(const std::string& key, std::optional<T>* out, Read read) {
    std::optional<YAML::Node> node = Take(key);
    if (!node) return false;
    if (node->IsNull()) {
      *out = std::nullopt;
      return true;
    }
    std::optional<T> value = read(*node, Path(key));
    if (value) *out = *value;
    return value.has_value();
  }

  template <typename T>
  void Int(const std::string& key, T* out) {
    Get(key, out, [&](const YAML::Node& n, const std::string& p) { return r_.Int(n, p); });
  }
  template <typename T>
  void Number(const std::string& key, T* out) {
    Get(key, out, [&](const YAML::Node& n, const std::string& p) { return r_.Number(n, p); });
  }
  template <typename T>
  void Bool(const std::string& key, T* out) {
    Get(key, out, [&](const YAML::Node& n, const std::string& p) { return r_.Bool(n, p); });
  }
  // A path: non-empty, joined to base_dir when relative.
  template <typename T>
  void FilePath(const std::string& key, T* out, const std::string& base_dir) {
    Get(key, out, [&](const YAML::Node& n, const std::string& p) -> std::optional<std::string> {
      std::optional<std::string> s = r_.String(n, p);
      if (!s) return s;
      if (s->empty()) {
        r_.Problem(p, "must not be empty");
        return std::nullopt;
      }
      if (base_dir.empty() || std::filesystem::path(*s).is_absolute()) return s;
      return (std::filesystem::path(base_dir) / *s).lexically_normal().string();
    });
  }
  template <typename E, typename Names>
  void Enum(const std::string& key, E* out, const Names& names) {
    const std::span<const EnumName<E>> table(std::data(names), std::size(names));
    Get(key, out, [&](const YAML::Node& n, const std::string& p) { return r_.Enum(n, p, table); });
  }

  void Finish() {
    for (const MapReader::Unread& u : map_.Rest()) {
      std::string message = "unknown key";
      if (std::optional<std::string> near = SuggestKey(map_.path(), u.key)) {
        message += "; did you mean \"" + *near + "\"?";
      }
      r_.Problem(u.mark, map_.KeyPath(u.key), message);
    }
  }

 private:
  std::optional<YAML::Node> Take(const std::string& key) {
    if (std::find(keys_.keys.begin(), keys_.keys.end(), key) == keys_.keys.end()) {
      throw std::logic_error("job spec: key " + Path(key) + " is missing from the schema");
    }
    return map_.Take(key);
  }

  SpecReader& r_;
  MapReader map_;
  const SectionKeys& keys_;
};

// A Section::Get reader from one of SpecReader's conversions.
template <typename T>
auto ReadWith(SpecReader& r, std::optional<T> (SpecReader::*fn)(const YAML::Node&, std::string_view)) {
  return [&r, fn](const YAML::Node& n, const std::string& p) { return (r.*fn)(n, p); };
}

// Range checks: report `message` at `path` unless ok.
void Require(SpecReader& r, bool ok, const std::string& path, const std::string& message) {
  if (!ok) r.Problem(path, message);
}

class Parser {
 public:
  Parser(SpecReader& r, std::string base_dir) : r_(r), base_(std::move(base_dir)) {}

  JobSpec Run(const YAML::Node& root) {
    Section top(r_, root, "");
    ParseModel(top.Value("model"));
    ParseTokenizer(top.Value("tokenizer"));
    ParseData(top.Value("data"));
    ParseDpo(top.Value("dpo"));
    ParseTrain(top.Value("train"));
    ParseReference(top.Value("reference"));
    ParseOutput(top.Value("output"));
    top.Finish();
    Resolve();
    return spec_;
  }

  // `root` read as a spec's dpo section alone (dpo-loss-check), checked as Run checks it.
  DpoLossOptions RunDpoSection(const YAML::Node& root) {
    ParseDpo(root);
    CheckLossOptions();
    return spec_.dpo;
  }

 private:
  void ParseModel(const std::optional<YAML::Node>& node) {
    ModelSection& m = spec_.model;
    Section s(r_, node, "model");
    s.FilePath("path", &m.path, base_);
    if (std::optional<YAML::Node> random = s.Value("random")) {
      Section rs(r_, random, "model.random");
      RandomInit init;
      if (rs.Required("config")) rs.FilePath("config", &init.config, base_);
      rs.Int("seed", &random_seed_);
      rs.Finish();
      m.random = init;
    }
    s.Enum("dtype", &m.dtype, kDtypes);
    s.Enum("device", &m.device, kDevices);
    s.Finish();
    if (m.path.has_value() == m.random.has_value()) {
      r_.Problem("model", "set exactly one of model.path (an HF model directory) or model.random");
    }
  }

  void ParseTokenizer(const std::optional<YAML::Node>& node) {
    Section s(r_, node, "tokenizer");
    s.FilePath("path", &tokenizer_path_, base_);
    s.Finish();
  }

  void ParseData(const std::optional<YAML::Node>& node) {
    DataSection& d = spec_.data;
    Section s(r_, node, "data");
    if (s.Required("train")) s.FilePath("train", &d.train, base_);
    s.FilePath("eval", &d.eval, base_);
    Checked(
        s, "eval_fraction", &d.eval_fraction, [](double v) { return v >= 0 && v < 1; }, "must be in [0, 1)");
    s.Enum("chat_template", &d.chat_template, kChatTemplates);
    s.Enum("implicit_prompt", &d.implicit_prompt, kImplicitPrompts);
    PositiveInt(s, "max_length", &d.max_length);
    PositiveInt(s, "max_prompt_length", &d.max_prompt_length);
    PositiveInt(s, "max_completion_length", &d.max_completion_length);
    s.Enum("truncation_mode", &d.truncation_mode, kTruncations);
    s.Enum("on_error", &d.on_error, kOnErrors);
    s.FilePath("prepared_dir", &prepared_dir_, base_);
    s.Int("shuffle_seed", &shuffle_seed_);
    s.Enum("train_sampling_strategy", &d.train_sampling_strategy, kSamplings);
    PositiveInt(s, "num_workers", &d.num_workers);
    s.Bool("padding_free", &d.padding_free);
    PositiveInt(s, "max_line_bytes", &d.max_line_bytes);
    s.Finish();
    if (d.eval && d.eval_fraction > 0) {
      r_.Problem("data.eval_fraction", "must be 0 when data.eval is set (one eval source only)");
    }
  }

  void ParseDpo(const std::optional<YAML::Node>& node) {
    DpoLossOptions& d = spec_.dpo;
    Section s(r_, node, "dpo");
    s.Number("beta", &d.beta);  // ranges and combinations: DpoLossOptions::Problems in Resolve()
    if (std::optional<YAML::Node> losses = s.Node("loss_type")) ParseLossTypes(*losses);
    // Absent or null: the default, equal weights.
    if (std::optional<YAML::Node> weights = s.Value("loss_weights")) ParseLossWeights(*weights);
    s.Number("label_smoothing", &d.label_smoothing);  // range depends on the loss: Resolve()
    s.Enum("f_divergence_type", &d.f_divergence_type, FDivergenceNames());
    s.Number("f_alpha_divergence_coef", &d.f_alpha_divergence_coef);
    s.Get("ld_alpha", &d.ld_alpha, ReadWith(r_, &SpecReader::Number));
    s.Bool("use_weighting", &d.use_weighting);
    s.Number("discopop_tau", &d.discopop_tau);
    s.Number("simpo_gamma", &d.simpo_gamma);
    s.Finish();
  }

  void ParseLossTypes(const YAML::Node& node) {
    DpoLossOptions& d = spec_.dpo;
    if (node.IsScalar()) {
      std::optional<Loss> loss = r_.Enum(node, "dpo.loss_type", LossTypeNames(), "loss type");
      if (loss) d.loss_type = {*loss};
      return;
    }
    if (!node.IsSequence()) {
      r_.Problem(ValueMark(node), "dpo.loss_type",
                 "expected a loss type or a list of them, got " + SpecReader::Describe(node));
      return;
    }
    if (node.size() == 0) {
      r_.Problem(node.Mark(), "dpo.loss_type", "must name at least one loss type");
      return;
    }
    std::vector<Loss> losses;
    for (size_t i = 0; i < node.size(); ++i) {
      const std::string path = "dpo.loss_type[" + std::to_string(i) + "]";
      if (std::optional<Loss> loss = r_.Enum(node[i], path, LossTypeNames(), "loss type")) {
        losses.push_back(*loss);
      }
    }
    if (losses.size() == node.size()) d.loss_type = losses;
    loss_list_ok_ = losses.size() == node.size();
  }

  void ParseLossWeights(const YAML::Node& node) {
    if (!node.IsSequence()) {
      r_.Problem(node.Mark(), "dpo.loss_weights", "expected a list of numbers, got " + SpecReader::Describe(node));
      return;
    }
    std::vector<double> weights;
    for (size_t i = 0; i < node.size(); ++i) {
      const std::string path = "dpo.loss_weights[" + std::to_string(i) + "]";
      if (std::optional<double> w = r_.Number(node[i], path)) weights.push_back(*w);
    }
    if (weights.size() == node.size()) spec_.dpo.loss_weights = weights;
  }

  void ParseTrain(const std::optional<YAML::Node>& node) {
    TrainSection& t = spec_.train;
    Section s(r_, node, "train");
    s.Int("seed", &t.seed);
    PositiveInt(s, "per_device_train_batch_size", &t.per_device_train_batch_size);
    PositiveInt(s, "per_device_eval_batch_size", &t.per_device_eval_batch_size);
    PositiveInt(s, "gradient_accumulation_steps", &t.gradient_accumulation_steps);
    auto positive = [](double v) { return v > 0; };
    auto non_negative = [](double v) { return v >= 0; };
    auto unit = [](double v) { return v >= 0 && v < 1; };
    Checked(s, "learning_rate", &t.learning_rate, positive, "must be > 0");
    Checked(s, "weight_decay", &t.weight_decay, non_negative, "must be >= 0");
    Checked(s, "adam_beta1", &t.adam_beta1, unit, "must be in [0, 1)");
    Checked(s, "adam_beta2", &t.adam_beta2, unit, "must be in [0, 1)");
    Checked(s, "adam_epsilon", &t.adam_epsilon, positive, "must be > 0");
    Checked(s, "max_grad_norm", &t.max_grad_norm, non_negative, "must be >= 0 (0: off)");
    s.Enum("lr_scheduler_type", &t.lr_scheduler_type, kSchedulers);
    if (s.Get("warmup_steps", &t.warmup_steps, ReadWith(r_, &SpecReader::Number))) {
      const double w = t.warmup_steps;
      Require(r_, w >= 0 && (w < 1 || w == static_cast<double>(static_cast<int64_t>(w))), "train.warmup_steps",
              "must be a ratio in [0, 1) or a whole number of steps");
    }
    Checked(s, "num_train_epochs", &t.num_train_epochs, positive, "must be > 0");
    if (s.Get("max_steps", &t.max_steps, ReadWith(r_, &SpecReader::Int))) {
      Require(r_, t.max_steps == -1 || t.max_steps > 0, "train.max_steps",
              "must be > 0, or -1 (from num_train_epochs)");
    }
    s.Bool("dataloader_drop_last", &t.dataloader_drop_last);
    PositiveInt(s, "logging_steps", &t.logging_steps);
    PositiveInt(s, "eval_steps", &t.eval_steps);
    PositiveInt(s, "save_steps", &t.save_steps);
    PositiveInt(s, "save_total_limit", &t.save_total_limit);
    s.Bool("bf16", &t.bf16);
    s.Bool("gradient_checkpointing", &t.gradient_checkpointing);
    PositiveInt(s, "logprob_chunk_size", &t.logprob_chunk_size);
    PositiveInt(s, "max_consecutive_bad_steps", &t.max_consecutive_bad_steps);
    s.Enum("sharding", &t.sharding, kShardings);
    s.Enum("reduce_dtype", &t.reduce_dtype, kReduceDtypes);
    Checked(s, "collective_timeout_seconds", &t.collective_timeout_seconds, positive, "must be > 0");
    s.Finish();
  }

  void ParseReference(const std::optional<YAML::Node>& node) {
    ReferenceSection& ref = spec_.reference;
    Section s(r_, node, "reference");
    s.Enum("mode", &ref.mode, kModes);
    s.FilePath("path", &ref.path, base_);
    PositiveInt(s, "precompute_batch_size", &ref.precompute_batch_size);
    s.Finish();
  }

  void ParseOutput(const std::optional<YAML::Node>& node) {
    OutputSection& o = spec_.output;
    Section s(r_, node, "output");
    if (s.Required("dir")) s.FilePath("dir", &o.dir, base_);
    // "latest" is a keyword, not a path relative to the spec.
    std::optional<YAML::Node> resume = s.Value("resume_from_checkpoint");
    if (resume && resume->IsScalar() && resume->Scalar() == "latest") {
      o.resume_from_checkpoint = "latest";
    } else {
      s.FilePath("resume_from_checkpoint", &o.resume_from_checkpoint, base_);
    }
    s.Get("metrics_file", &o.metrics_file,
          [&](const YAML::Node& n, const std::string& p) -> std::optional<std::string> {
            std::optional<std::string> v = r_.String(n, p);
            if (v && v->empty()) {
              r_.Problem(p, "must not be empty");
              return std::nullopt;
            }
            return v;
          });
    s.Finish();
  }

  // Fills the defaults that depend on other keys, then checks combinations of keys.
  void Resolve() {
    JobSpec& j = spec_;
    if (j.model.random) j.model.random->seed = random_seed_.value_or(j.train.seed);
    if (tokenizer_path_) {
      j.tokenizer.path = *tokenizer_path_;
    } else if (j.model.path) {
      j.tokenizer.path = *j.model.path;
    } else if (j.model.random) {
      r_.Problem("tokenizer.path", "required with model.random (there is no model directory)");
    }
    j.data.shuffle_seed = shuffle_seed_.value_or(j.train.seed);
    if (prepared_dir_) {
      j.data.prepared_dir = *prepared_dir_;
    } else if (!j.output.dir.empty()) {
      j.data.prepared_dir = (std::filesystem::path(j.output.dir) / "prepared").string();
    }
    j.dpo.reference_free = j.reference.mode == ReferenceSection::Mode::kNone;
    CheckLossOptions();
    if (j.train.eval_steps && !j.data.eval && j.data.eval_fraction == 0) {
      r_.Problem("train.eval_steps",
                 "set, but there is no eval data (data.eval or "
                 "data.eval_fraction)");
    }
    if (j.reference.mode == ReferenceSection::Mode::kNone && j.reference.path) {
      r_.Problem("reference.path", "must be null with reference.mode none (reference-free)");
    }
  }

  // The loss options' own rules (DpoLossOptions::Problems), reported at their keys; a weight count
  // is not compared with a loss list that already failed to parse.
  void CheckLossOptions() {
    for (const LossOptionProblem& p : spec_.dpo.Problems()) {
      if (p.key == "loss_weights" && !loss_list_ok_) continue;
      r_.Problem("dpo." + p.key, p.message);
    }
  }

  // A positive integer (or null, for optional fields).
  template <typename T>
  void PositiveInt(Section& s, const std::string& key, T* out) {
    if (!s.Get(key, out, ReadWith(r_, &SpecReader::Int))) return;
    if constexpr (std::is_same_v<T, int64_t>) {
      Require(r_, *out > 0, s.Path(key), "must be > 0");
    } else {
      Require(r_, !*out || **out > 0, s.Path(key), "must be > 0");
    }
  }

  // A number that must satisfy `ok` when given.
  template <typename Ok>
  void Checked(Section& s, const std::string& key, double* out, Ok ok, const std::string& message) {
    if (s.Get(key, out, ReadWith(r_, &SpecReader::Number))) Require(r_, ok(*out), s.Path(key), message);
  }

  SpecReader& r_;
  std::string base_;
  JobSpec spec_;
  // Keys whose file value may be null while the resolved field is not.
  std::optional<int64_t> random_seed_;
  std::optional<std::string> tokenizer_path_;
  std::optional<std::string> prepared_dir_;
  std::optional<int64_t> shuffle_seed_;
  bool loss_list_ok_ = true;
};

}  // namespace

// ---- Entry points -----------------------------------------------------------------------------

namespace {

constexpr size_t kMaxSpecBytes = 1 << 20;
constexpr int kMaxNesting = 64;  // a spec nests 3 deep; bounds yaml-cpp's recursion

// First pass over the events: rejects deep nesting before yaml-cpp builds (recursively) a node
// tree of it, and finds where a second document would start.
class Prescan : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override {
    depth_ = 0;
    if (++documents_ == 2) second_ = mark;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    Enter(mark);
  }
  void OnSequenceEnd() override { --depth_; }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    Enter(mark);
  }
  void OnMapEnd() override { --depth_; }

  int documents() const { return documents_; }
  const YAML::Mark& second_document() const { return second_; }

 private:
  void Enter(const YAML::Mark& mark) {
    if (++depth_ > kMaxNesting) {
      throw YAML::ParserException(mark, "nested deeper than " + std::to_string(kMaxNesting) + " levels");
    }
  }
  int depth_ = 0;
  int documents_ = 0;
  YAML::Mark second_ = YAML::Mark::null_mark();
};

}  // namespace

JobSpecError::JobSpecError(std::vector<std::string> problems)
    : Error(
          [&] {
            std::string text;
            for (const std::string& p : problems) text += (text.empty() ? "" : "\n") + p;
            return text;
          }(),
          ErrorCode::kInvalidSpec),
      problems_(std::move(problems)) {}

namespace {

// `yaml_text` as one YAML document; syntax errors and a second document are reported to `reader`
// and thrown.
YAML::Node LoadOneDocument(const std::string& yaml_text, SpecReader& reader) {
  if (yaml_text.size() > kMaxSpecBytes) {
    reader.Problem("", "the spec is larger than " + std::to_string(kMaxSpecBytes) + " bytes");
    reader.ThrowIfAny();
  }
  try {
    std::istringstream events(yaml_text);
    YAML::Parser parser(events);
    Prescan prescan;
    // Two documents are enough to know; and on some stray tokens yaml-cpp 0.7 starts an empty
    // document again and again without consuming input, so the loop must not run to the end.
    while (prescan.documents() < 2 && parser.HandleNextDocument(prescan)) {
    }
    if (prescan.documents() > 1) {
      reader.Problem(prescan.second_document(), "",
                     "unexpected content after the end of the spec (a spec is one YAML document)");
      reader.ThrowIfAny();
    }
    return YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    reader.Problem(e.mark, "", "YAML syntax error: " + e.msg);
    reader.ThrowIfAny();
  }
  return {};
}

}  // namespace

JobSpec ParseJobSpec(const std::string& yaml_text, const std::string& source_name, const std::string& base_dir) {
  SpecReader reader(source_name);
  const YAML::Node root = LoadOneDocument(yaml_text, reader);
  JobSpec spec = Parser(reader, base_dir).Run(root);
  reader.ThrowIfAny();
  return spec;
}

DpoLossOptions ParseDpoSection(const std::string& yaml_text, const std::string& source_name) {
  SpecReader reader(source_name);
  const YAML::Node root = LoadOneDocument(yaml_text, reader);
  DpoLossOptions options = Parser(reader, "").RunDpoSection(root);
  reader.ThrowIfAny();
  return options;
}

JobSpec LoadJobSpec(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail(path, "cannot open the job spec");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) Fail(path, "cannot read the job spec");
  const std::filesystem::path dir = std::filesystem::absolute(path).parent_path();
  return ParseJobSpec(text, path, dir.lexically_normal().string());
}

std::string_view ToString(ModelSection::Dtype v) { return NameOf(kDtypes, v); }
std::string_view ToString(ModelSection::Device v) { return NameOf(kDevices, v); }
std::string_view ToString(DataSection::ChatTemplate v) { return NameOf(kChatTemplates, v); }
std::string_view ToString(DataSection::Truncation v) { return NameOf(kTruncations, v); }
std::string_view ToString(DataSection::OnError v) { return NameOf(kOnErrors, v); }
std::string_view ToString(DataSection::Sampling v) { return NameOf(kSamplings, v); }
std::string_view ToString(DataSection::ImplicitPrompt v) { return NameOf(kImplicitPrompts, v); }
std::string_view ToString(TrainSection::Scheduler v) { return NameOf(kSchedulers, v); }
std::string_view ToString(TrainSection::Sharding v) { return NameOf(kShardings, v); }
std::string_view ToString(TrainSection::ReduceDtype v) { return NameOf(kReduceDtypes, v); }
std::string_view ToString(ReferenceSection::Mode v) { return NameOf(kModes, v); }

}  // namespace dpo
