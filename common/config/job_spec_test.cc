#include "common/config/job_spec.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/util/path_util.h"

namespace dpo {
namespace {

const char kMinimal[] = R"(
model: {path: /models/m}
data: {train: /data/train.jsonl}
output: {dir: /out/run}
)";

// Every key set to a non-default value.
const char kFull[] = R"(model:
  random:
    config: cfg/config.json
    seed: 7
  dtype: bfloat16
  device: cuda
tokenizer:
  path: tok
data:
  train: d/train.jsonl.gz
  eval: d/eval.jsonl
  eval_fraction: 0
  chat_template: llama3
  implicit_prompt: common_prefix
  max_length: 2048
  max_prompt_length: 512
  max_completion_length: 1536
  truncation_mode: keep_end
  on_error: skip
  prepared_dir: cache
  shuffle_seed: 11
  train_sampling_strategy: group_by_length
  num_workers: 3
dpo:
  beta: 0.25
  loss_type: [sigmoid, bco_pair, sft]
  loss_weights: [0.8, 0.2, 1.0]
  label_smoothing: 0.125
  f_divergence_type: reverse_kl
  f_alpha_divergence_coef: 0.75
  ld_alpha: 0.5
  use_weighting: true
  discopop_tau: 0.1
  simpo_gamma: 1.5
train:
  seed: 3
  per_device_train_batch_size: 4
  per_device_eval_batch_size: 16
  gradient_accumulation_steps: 2
  learning_rate: 5.0e-7
  weight_decay: 0.01
  adam_beta1: 0.8
  adam_beta2: 0.95
  adam_epsilon: 1e-6
  max_grad_norm: 0
  lr_scheduler_type: cosine
  warmup_steps: 0.1
  num_train_epochs: 2.5
  max_steps: 100
  dataloader_drop_last: true
  logging_steps: 5
  eval_steps: 50
  save_steps: 25
  save_total_limit: 2
  bf16: true
  gradient_checkpointing: true
  logprob_chunk_size: 256
  max_consecutive_bad_steps: 3
  collective_timeout_seconds: 90
reference:
  mode: precomputed
  path: ref
  precompute_batch_size: 32
output:
  dir: out
  resume_from_checkpoint: latest
  metrics_file: m.jsonl
)";

// The problems ParseJobSpec reports for `yaml` (none when it parses).
std::vector<std::string> Problems(const std::string& yaml) {
  try {
    ParseJobSpec(yaml, "job.yaml");
  } catch (const JobSpecError& e) {
    return e.problems();
  }
  return {};
}

// True when some problem contains `needle`; prints all of them otherwise.
::testing::AssertionResult HasProblem(const std::string& yaml, const std::string& needle) {
  const std::vector<std::string> problems = Problems(yaml);
  std::string all;
  for (const std::string& p : problems) {
    if (p.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
    all += "\n  " + p;
  }
  return ::testing::AssertionFailure() << "no problem contains [" << needle << "]; got:" << all;
}

// kMinimal followed by `extra` (sections kMinimal does not have).
std::string WithMinimal(const std::string& extra) { return std::string(kMinimal) + extra; }

// kMinimal with `entries` added to the flow mapping of one of its sections.
std::string MinimalWith(const std::string& section, const std::string& entries) {
  auto body = [&](const std::string& name, const std::string& base) {
    return name + ": {" + base + (section == name ? ", " + entries : "") + "}\n";
  };
  return "\n" + body("model", "path: /models/m") + body("data", "train: /data/train.jsonl") +
         body("output", "dir: /out/run");
}

TEST(JobSpecTest, MinimalSpecTakesTheDocumentedDefaults) {
  const JobSpec s = ParseJobSpec(kMinimal, "job.yaml");
  JobSpec expected;
  expected.model.path = "/models/m";
  expected.tokenizer.path = "/models/m";  // tokenizer defaults to the model directory
  expected.data.train = "/data/train.jsonl";
  expected.data.prepared_dir = "/out/run/prepared";
  expected.output.dir = "/out/run";
  EXPECT_EQ(s, expected);
  // The TRL 1.16 defaults, spelled out so a change of default is a deliberate test change.
  EXPECT_EQ(s.dpo.beta, 0.1);
  EXPECT_EQ(s.dpo.loss_type, std::vector<LossType>{LossType::kSigmoid});
  EXPECT_FALSE(s.dpo.loss_weights.has_value());
  EXPECT_EQ(s.dpo.f_alpha_divergence_coef, 0.5);
  EXPECT_EQ(s.dpo.discopop_tau, 0.05);
  EXPECT_EQ(s.data.max_length, 1024);
  EXPECT_EQ(s.data.truncation_mode, DataSection::Truncation::kKeepStart);
  EXPECT_EQ(s.train.learning_rate, 1e-6);
  EXPECT_EQ(s.train.per_device_train_batch_size, 8);
  EXPECT_EQ(s.train.logging_steps, 10);
  EXPECT_EQ(s.train.max_steps, -1);
  EXPECT_FALSE(s.train.dataloader_drop_last);  // HF keeps the last partial batch
  EXPECT_EQ(s.data.implicit_prompt, DataSection::ImplicitPrompt::kAssistantTurn);
  EXPECT_EQ(s.train.collective_timeout_seconds, 1800.0);  // c10d NCCL default
  EXPECT_EQ(s.data.shuffle_seed, 42);                     // = train.seed
  EXPECT_EQ(s.reference.mode, ReferenceSection::Mode::kModel);
  EXPECT_EQ(s.output.metrics_file, "metrics.jsonl");
}

TEST(JobSpecTest, FullSpecParsesAndRoundTrips) {
  const JobSpec s = ParseJobSpec(kFull, "full.yaml", "/base");
  ASSERT_TRUE(s.model.random.has_value());
  EXPECT_EQ(s.model.random->config, "/base/cfg/config.json");
  EXPECT_EQ(s.model.random->seed, 7);
  EXPECT_EQ(s.model.dtype, ModelSection::Dtype::kBFloat16);
  EXPECT_EQ(s.model.device, ModelSection::Device::kCuda);
  EXPECT_EQ(s.tokenizer.path, "/base/tok");
  EXPECT_EQ(s.data.train, "/base/d/train.jsonl.gz");
  EXPECT_EQ(s.data.prepared_dir, "/base/cache");
  EXPECT_EQ(s.data.train_sampling_strategy, DataSection::Sampling::kGroupByLength);
  EXPECT_EQ(s.data.num_workers, 3);
  EXPECT_EQ(s.train.collective_timeout_seconds, 90.0);
  EXPECT_EQ(s.dpo.loss_type.size(), 3u);
  EXPECT_EQ(s.dpo.loss_type[1], LossType::kBcoPair);
  EXPECT_EQ(s.dpo.loss_weights, (std::vector<double>{0.8, 0.2, 1.0}));
  EXPECT_EQ(s.dpo.ld_alpha, 0.5);
  EXPECT_EQ(s.train.learning_rate, 5e-7);
  EXPECT_EQ(s.train.warmup_steps, 0.1);
  EXPECT_EQ(s.train.num_train_epochs, 2.5);
  EXPECT_TRUE(s.train.dataloader_drop_last);
  EXPECT_EQ(s.data.implicit_prompt, DataSection::ImplicitPrompt::kCommonPrefix);
  EXPECT_EQ(s.train.bf16, true);
  EXPECT_EQ(s.reference.mode, ReferenceSection::Mode::kPrecomputed);
  EXPECT_EQ(s.reference.path, "/base/ref");
  EXPECT_EQ(s.output.resume_from_checkpoint, "latest");  // a keyword, not joined to the base
  EXPECT_EQ(s.output.metrics_file, "m.jsonl");           // relative to output.dir, kept

  const std::string yaml = ToYaml(s);
  EXPECT_EQ(ParseJobSpec(yaml, "resolved.yaml"), s) << yaml;
  EXPECT_EQ(ToYaml(ParseJobSpec(yaml, "resolved.yaml")), yaml);
}

TEST(JobSpecTest, RoundTripKeepsAwkwardStringsAndNumbers) {
  JobSpec s = ParseJobSpec(kMinimal, "job.yaml");
  s.model.path = "null";  // must stay a string
  s.data.train = "/a \"quoted\"\\ path\tü.jsonl";
  s.output.resume_from_checkpoint = "1e3";
  s.train.learning_rate = 0.1 + 0.2;  // needs 17 significant digits
  s.train.adam_epsilon = 1e-300;
  s.dpo.loss_weights = std::vector<double>{-0.0, 3.0};
  s.dpo.loss_type = {LossType::kSigmoid, LossType::kSft};
  EXPECT_EQ(ParseJobSpec(ToYaml(s), "resolved.yaml"), s) << ToYaml(s);
}

TEST(JobSpecTest, LossTypeAcceptsOneNameOrAList) {
  const JobSpec s = ParseJobSpec(WithMinimal("dpo: {loss_type: ipo}\n"), "job.yaml");
  EXPECT_EQ(s.dpo.loss_type, std::vector<LossType>{LossType::kIpo});
  EXPECT_EQ(NameOf(LossTypeNames(), LossType::kSigmoidNorm), "sigmoid_norm");
  EXPECT_EQ(ParseJobSpec(WithMinimal("dpo: {loss_type: simpo}\n"), "job.yaml").dpo.loss_type[0], LossType::kSimpo);
}

TEST(JobSpecTest, UnknownKeySuggestsTheSameSection) {
  EXPECT_TRUE(HasProblem(WithMinimal("train: {learning_rat: 1.0e-5}\n"),
                         "job.yaml:5:9: train.learning_rat: unknown key; did you mean "
                         "\"train.learning_rate\"?"));
  EXPECT_TRUE(
      HasProblem(WithMinimal("train: {lr: 1.0e-5}\n"), "train.lr: unknown key; did you mean \"train.learning_rate\"?"));
  // Nothing close: no guess.
  EXPECT_EQ(Problems(WithMinimal("train: {xyzzy_plugh: 1}\n")),
            std::vector<std::string>{"job.yaml:5:9: train.xyzzy_plugh: unknown key"});
}

TEST(JobSpecTest, UnknownKeySuggestsAnotherSection) {
  EXPECT_TRUE(HasProblem(WithMinimal("train: {beta: 0.2}\n"), "train.beta: unknown key; did you mean \"dpo.beta\"?"));
  EXPECT_TRUE(HasProblem(WithMinimal("trian: {seed: 1}\n"), "trian: unknown key; did you mean \"train\"?"));
  EXPECT_TRUE(HasProblem(WithMinimal("beta: 0.2\n"), "beta: unknown key; did you mean \"dpo.beta\"?"));
  EXPECT_TRUE(HasProblem(WithMinimal("model2: {}\n"), "model2: unknown key; did you mean \"model\"?"));
}

TEST(JobSpecTest, UnknownEnumValuesSuggestTheClosest) {
  EXPECT_TRUE(HasProblem(WithMinimal("dpo: {loss_type: [sigmoid, sigmoidd]}\n"),
                         "job.yaml:5:28: dpo.loss_type[1]: unknown loss type \"sigmoidd\"; did "
                         "you mean \"sigmoid\"?"));
  EXPECT_TRUE(HasProblem(MinimalWith("data", "truncation_mode: keep_strat"),
                         "data.truncation_mode: unknown value \"keep_strat\"; did you mean "
                         "\"keep_start\"?"));
  EXPECT_TRUE(HasProblem(MinimalWith("model", "dtype: fp8"),
                         "model.dtype: unknown value \"fp8\"; expected one of float32, bfloat16"));
}

TEST(JobSpecTest, WrongTypesNameTheKeyAndTheValue) {
  EXPECT_TRUE(
      HasProblem(WithMinimal("train: {max_steps: ten}\n"), "train.max_steps: expected an integer, got \"ten\""));
  EXPECT_TRUE(
      HasProblem(WithMinimal("train: {max_steps: 2.5}\n"), "train.max_steps: expected an integer, got \"2.5\""));
  EXPECT_TRUE(HasProblem(WithMinimal("train: {learning_rate: \"1e-5\"}\n"),
                         "train.learning_rate: expected a number, got \"1e-5\""));
  EXPECT_TRUE(
      HasProblem(WithMinimal("train: {learning_rate: .inf}\n"), "train.learning_rate: expected a finite number"));
  EXPECT_TRUE(HasProblem(WithMinimal("train: {bf16: yes}\n"), "train.bf16: expected true or false, got \"yes\""));
  EXPECT_TRUE(HasProblem(WithMinimal("train: {seed: [1]}\n"), "train.seed: expected an integer, got a list"));
  EXPECT_TRUE(HasProblem(WithMinimal("train: {seed: 99999999999999999999}\n"),
                         "train.seed: integer \"99999999999999999999\" is out of range"));
  EXPECT_TRUE(HasProblem(WithMinimal("train: {seed: }\n"), "train.seed: expected an integer, got null"));
  EXPECT_TRUE(HasProblem(WithMinimal("train: 3\n"), "train: expected a mapping, got \"3\""));
  EXPECT_TRUE(HasProblem(WithMinimal("dpo: {loss_weights: 1.0}\n"), "dpo.loss_weights: expected a list of numbers"));
}

TEST(JobSpecTest, OutOfRangeValues) {
  EXPECT_TRUE(HasProblem(WithMinimal("train: {learning_rate: 0}\n"), "train.learning_rate: must be > 0"));
  EXPECT_TRUE(HasProblem(WithMinimal("train: {per_device_train_batch_size: 0}\n"),
                         "train.per_device_train_batch_size: must be > 0"));
  EXPECT_TRUE(HasProblem(WithMinimal("train: {warmup_steps: 2.5}\n"),
                         "train.warmup_steps: must be a ratio in [0, 1) or a whole number"));
  EXPECT_TRUE(HasProblem(WithMinimal("train: {max_steps: 0}\n"), "train.max_steps: must be > 0"));
  EXPECT_TRUE(HasProblem(WithMinimal("train: {collective_timeout_seconds: 0}\n"),
                         "train.collective_timeout_seconds: must be > 0"));
  EXPECT_TRUE(HasProblem(WithMinimal("dpo: {beta: -1}\n"), "dpo.beta: must be > 0"));
  EXPECT_TRUE(HasProblem(WithMinimal("dpo: {ld_alpha: 1.5}\n"), "dpo.ld_alpha: must be in [0, 1]"));
  EXPECT_TRUE(HasProblem(MinimalWith("data", "eval_fraction: 1"), "data.eval_fraction: must be in [0, 1)"));
  // Null is "no limit" for optional integers, and allowed.
  EXPECT_FALSE(ParseJobSpec(MinimalWith("data", "max_length: null"), "j").data.max_length);
}

TEST(JobSpecTest, RequiredKeys) {
  const std::vector<std::string> problems = Problems("train: {seed: 1}\n");
  ASSERT_EQ(problems.size(), 3u);
  EXPECT_TRUE(HasProblem("train: {seed: 1}\n", "job.yaml: data.train: required"));
  EXPECT_TRUE(HasProblem("train: {seed: 1}\n", "job.yaml: output.dir: required"));
  EXPECT_TRUE(HasProblem("train: {seed: 1}\n", "job.yaml: model: set exactly one of"));
  EXPECT_TRUE(
      HasProblem("model: {random: {seed: 1}}\ndata: {train: a}\noutput: {dir: o}\n", "model.random.config: required"));
  EXPECT_TRUE(HasProblem("model: {random: {config: c.json}}\ndata: {train: a}\noutput: {dir: o}\n",
                         "tokenizer.path: required with model.random"));
  EXPECT_EQ(Problems("").size(), 3u);  // an empty file lacks the same three keys
}

TEST(JobSpecTest, CrossFieldChecks) {
  EXPECT_TRUE(HasProblem(WithMinimal("dpo: {loss_type: [sigmoid, sft], loss_weights: [1.0]}\n"),
                         "dpo.loss_weights: has 1 entries but dpo.loss_type has 2"));
  EXPECT_TRUE(HasProblem(WithMinimal("dpo: {loss_type: exo_pair}\n"),
                         "dpo.label_smoothing: must be > 0 for the exo_pair loss"));
  EXPECT_TRUE(HasProblem(WithMinimal("dpo: {loss_type: robust, label_smoothing: 0.5}\n"),
                         "dpo.label_smoothing: must be in [0, 0.5) for the robust loss"));
  EXPECT_TRUE(HasProblem(WithMinimal("dpo: {loss_type: bco_pair, f_divergence_type: js_divergence}\n"),
                         "dpo.f_divergence_type: js_divergence is not supported with loss type "
                         "bco_pair"));
  EXPECT_TRUE(HasProblem(WithMinimal("dpo: {loss_type: simpo, f_divergence_type: forward_kl}\n"),
                         "forward_kl is not supported with loss type simpo"));
  EXPECT_TRUE(HasProblem(WithMinimal("dpo: {loss_type: aot, use_weighting: true}\n"),
                         "dpo.use_weighting: not supported with aot"));
  EXPECT_TRUE(HasProblem(WithMinimal("reference: {mode: none, path: /ref}\n"),
                         "reference.path: must be null with reference.mode none"));
  EXPECT_TRUE(HasProblem(WithMinimal("train: {eval_steps: 10}\n"), "train.eval_steps: set, but there is no eval data"));
  EXPECT_TRUE(HasProblem("model: {path: m, random: {config: c}}\ndata: {train: a}\noutput: {dir: o}\n",
                         "model: set exactly one of model.path"));
  EXPECT_TRUE(HasProblem(MinimalWith("data", "eval: e.jsonl, eval_fraction: 0.1"),
                         "data.eval_fraction: must be 0 when data.eval is set"));
  // The same combinations that are fine.
  EXPECT_TRUE(Problems(WithMinimal("dpo: {loss_type: [sigmoid, sft], loss_weights: [1, 0.5]}\n"
                                   "reference: {mode: none}\n"))
                  .empty());
}

TEST(JobSpecTest, ReportsEveryProblemAtOnceInFileOrder) {
  const std::string yaml =
      "model: {path: m}\n"
      "data: {train: a.jsonl, max_length: -4}\n"
      "dpo: {loss_type: [sigmoid, sigmoidd], betta: 0.1}\n"
      "train: {lr: 1, max_steps: ten}\n";
  try {
    ParseJobSpec(yaml, "bad.yaml");
    FAIL() << "accepted a bad spec";
  } catch (const JobSpecError& e) {
    const std::vector<std::string>& p = e.problems();
    ASSERT_EQ(p.size(), 6u) << e.what();
    EXPECT_EQ(p[0], "bad.yaml:2:24: data.max_length: must be > 0");
    EXPECT_EQ(p[1],
              "bad.yaml:3:28: dpo.loss_type[1]: unknown loss type \"sigmoidd\"; did you "
              "mean \"sigmoid\"?");
    EXPECT_EQ(p[2], "bad.yaml:3:39: dpo.betta: unknown key; did you mean \"dpo.beta\"?");
    EXPECT_EQ(p[3], "bad.yaml:4:9: train.lr: unknown key; did you mean \"train.learning_rate\"?");
    EXPECT_EQ(p[4], "bad.yaml:4:27: train.max_steps: expected an integer, got \"ten\"");
    EXPECT_EQ(p[5], "bad.yaml: output.dir: required");
    // what() is the same lines, so a log shows all of them.
    std::string joined;
    for (const std::string& line : p) joined += (joined.empty() ? "" : "\n") + line;
    EXPECT_EQ(std::string(e.what()), joined);
  }
}

TEST(JobSpecTest, YamlSyntaxErrorsHaveFileLineColumn) {
  EXPECT_TRUE(HasProblem("model: {path: m\ndata: [\n", "job.yaml:"));
  const std::vector<std::string> p = Problems("model:\n  path: m\n   bad: [1, 2\n");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].rfind("job.yaml:3:", 0), 0u) << p[0];
  EXPECT_NE(p[0].find("YAML syntax error"), std::string::npos) << p[0];
  EXPECT_TRUE(HasProblem(WithMinimal("train: {seed: 1, seed: 2}\n"), "train.seed: duplicate key"));
  EXPECT_EQ(Problems("a: 1\n---\nb: 2\n"),
            std::vector<std::string>{"job.yaml:2:1: unexpected content after the end of the spec "
                                     "(a spec is one YAML document)"});
  // A stray token makes yaml-cpp start empty documents forever; found by the fuzzer.
  EXPECT_TRUE(HasProblem("data: {train: t.jsonl}\nout o}\n", "job.yaml:2:"));
}

TEST(JobSpecTest, DeepNestingIsRejectedNotRecursedInto) {
  const std::string deep = "train: " + std::string(100000, '[') + std::string(100000, ']') + "\n";
  EXPECT_TRUE(HasProblem(deep, "nested deeper than 64 levels"));
  std::string blocks = "x:\n";
  for (int i = 1; i < 80; ++i) blocks += std::string(i, ' ') + "x:\n";
  EXPECT_TRUE(HasProblem(blocks, "nested deeper than 64 levels"));
}

TEST(JobSpecTest, LoadResolvesPathsAgainstTheSpecDirectory) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("job_spec_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir / "sub");
  const std::filesystem::path file = dir / "sub" / "job.yaml";
  std::ofstream(file) << "model: {path: ../models/m}\ndata: {train: d.jsonl}\n"
                         "output: {dir: /abs/out, resume_from_checkpoint: ckpt/step-10}\n";
  const JobSpec s = LoadJobSpec(file.string());
  EXPECT_EQ(s.model.path, (dir / "models/m").string());
  EXPECT_EQ(s.tokenizer.path, (dir / "models/m").string());
  EXPECT_EQ(s.data.train, (dir / "sub/d.jsonl").string());
  EXPECT_EQ(s.output.dir, "/abs/out");
  EXPECT_EQ(s.output.resume_from_checkpoint, (dir / "sub/ckpt/step-10").string());
  // The resolved spec, re-read from anywhere, is the same spec.
  EXPECT_EQ(ParseJobSpec(ToYaml(s), "resolved.yaml", "/elsewhere"), s);
  RemoveTree(dir.string());
  EXPECT_THROW(LoadJobSpec((dir / "missing.yaml").string()), Error);
}

std::string SourceDir() {
  const char* dir = std::getenv("DPO_SOURCE_DIR");
  return dir ? dir : ".";
}

TEST(JobSpecTest, ExampleJobIsValid) {
  const JobSpec s = LoadJobSpec(SourceDir() + "/examples/job.yaml");
  ASSERT_TRUE(s.model.random.has_value());
  EXPECT_TRUE(std::filesystem::exists(s.model.random->config)) << s.model.random->config;
  EXPECT_TRUE(std::filesystem::exists(s.tokenizer.path + "/tokenizer.json")) << s.tokenizer.path;
  EXPECT_TRUE(std::filesystem::exists(s.data.train)) << s.data.train;
  EXPECT_EQ(s.dpo.loss_type, std::vector<LossType>{LossType::kSigmoid});
  EXPECT_GT(s.train.max_steps, 0);
}

}  // namespace
}  // namespace dpo
