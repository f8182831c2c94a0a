// Every documented dpo.*, train.* and reference.* key changes the spec the engine runs with. The
// spec's sections are the engine's own options: the dpo section is the DpoLossOptions the loss
// receives unchanged, and the trainer, schedule and optimizer read train and reference directly.
// So a key that is parsed but dropped on the way, as dpo.simpo_gamma once was (training always
// used 0.5), fails here; and so does a documented key the parser does not know, or the reverse.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>

#include "common/config/job_spec.h"

namespace dpo {
namespace {

constexpr const char* kBase =
    "model: {random: {config: c.json}}\ntokenizer: {path: t}\n"
    "data: {train: d.jsonl, eval: e.jsonl}\noutput: {dir: out}\n";

// A value other than the default, as YAML, for every key of the three sections.
const std::map<std::string, std::string>& NonDefaultValues() {
  static const std::map<std::string, std::string> values = {
      {"dpo.beta", "0.2"},
      {"dpo.loss_type", "hinge"},
      {"dpo.loss_weights", "[2.0]"},
      {"dpo.label_smoothing", "0.1"},
      {"dpo.f_divergence_type", "forward_kl"},
      {"dpo.f_alpha_divergence_coef", "0.7"},
      {"dpo.ld_alpha", "0.5"},
      {"dpo.use_weighting", "true"},
      {"dpo.discopop_tau", "0.1"},
      {"dpo.simpo_gamma", "1.0"},
      {"train.seed", "7"},
      {"train.per_device_train_batch_size", "4"},
      {"train.per_device_eval_batch_size", "4"},
      {"train.gradient_accumulation_steps", "2"},
      {"train.learning_rate", "1e-5"},
      {"train.weight_decay", "0.1"},
      {"train.adam_beta1", "0.8"},
      {"train.adam_beta2", "0.99"},
      {"train.adam_epsilon", "1e-6"},
      {"train.max_grad_norm", "0.5"},
      {"train.lr_scheduler_type", "cosine"},
      {"train.warmup_steps", "2"},
      {"train.num_train_epochs", "2"},
      {"train.max_steps", "3"},
      {"train.dataloader_drop_last", "true"},
      {"train.logging_steps", "1"},
      {"train.eval_steps", "5"},
      {"train.save_steps", "50"},
      {"train.save_total_limit", "2"},
      {"train.bf16", "true"},
      {"train.gradient_checkpointing", "true"},
      {"train.logprob_chunk_size", "128"},
      {"train.max_consecutive_bad_steps", "3"},
      {"train.sharding", "full"},
      {"train.reduce_dtype", "bfloat16"},
      {"train.collective_timeout_seconds", "60"},
      {"reference.mode", "precomputed"},
      {"reference.path", "ref"},
      {"reference.precompute_batch_size", "4"},
  };
  return values;
}

bool InCheckedSection(const std::string& key) {
  return key.starts_with("dpo.") || key.starts_with("train.") || key.starts_with("reference.");
}

// The keys docs/job_spec.md documents: its table rows start with "| `section.key` |".
std::set<std::string> DocumentedKeys() {
  const char* source_dir = std::getenv("DPO_SOURCE_DIR");
  const std::string path = std::string(source_dir ? source_dir : ".") + "/docs/job_spec.md";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  const std::regex row(R"(^\| `([a-z_0-9]+(\.[a-z_0-9]+)+)` \|)");
  std::set<std::string> keys;
  std::smatch match;
  for (std::string line; std::getline(in, line);) {
    if (std::regex_search(line, match, row)) keys.insert(match[1]);
  }
  return keys;
}

// Every key path a resolved spec writes ("model.random.seed"): ToYaml writes every key the
// parser accepts, nulls included (JobSpecTest checks the round trip).
std::set<std::string> WrittenKeys() {
  std::set<std::string> keys;
  const auto walk = [&](const auto& self, const YAML::Node& node, const std::string& prefix) -> void {
    for (const auto& kv : node) {
      const std::string path = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
      if (!prefix.empty()) keys.insert(path);
      if (kv.second.IsMap()) self(self, kv.second, path);
    }
  };
  walk(walk, YAML::Load(ToYaml(ParseJobSpec(kBase, "base"))), "");
  return keys;
}

TEST(SpecKeysTest, TheDocsDocumentEveryKeyAndNoOther) {
  const std::set<std::string> written = WrittenKeys();
  EXPECT_TRUE(written.count("model.random.seed"));
  EXPECT_TRUE(written.count("train.learning_rate"));
  EXPECT_EQ(DocumentedKeys(), written);
}

TEST(SpecKeysTest, EveryDocumentedKeyChangesItsSection) {
  const JobSpec defaults = ParseJobSpec(kBase, "base");
  std::set<std::string> documented = DocumentedKeys();
  std::erase_if(documented, [](const std::string& key) { return !InCheckedSection(key); });
  ASSERT_GT(documented.size(), 30u);
  for (const std::string& key : documented) {
    const auto value = NonDefaultValues().find(key);
    ASSERT_NE(value, NonDefaultValues().end()) << key << ": documented, but this test has no value for it";
    const std::string section = key.substr(0, key.find('.'));
    const std::string name = key.substr(section.size() + 1);
    const JobSpec set = ParseJobSpec(std::string(kBase) + section + ":\n  " + name + ": " + value->second + "\n", key);
    if (section == "dpo") {
      EXPECT_NE(set.dpo, defaults.dpo) << key << " does not reach the loss options";
    } else if (section == "train") {
      EXPECT_NE(set.train, defaults.train) << key << " does not reach the train options";
    } else {
      EXPECT_NE(set.reference, defaults.reference) << key << " does not reach the reference options";
    }
  }
}

}  // namespace
}  // namespace dpo
