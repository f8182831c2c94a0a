// ToYaml: the resolved spec as YAML text, every key written (nulls too), so a recorded spec is
// self-contained and ParseJobSpec(ToYaml(s)) == s. Written by hand rather than with
// YAML::Emitter for exact control of scalars: doubles in shortest round-trip form, every string
// double-quoted (a path named "null" or "1e3" must stay a string).
#include <charconv>
#include <string>

#include "common/config/job_spec.h"

namespace dpo {
namespace {

std::string Quoted(const std::string& s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      // \xNN is one code point; only ASCII escapes decode back to the same single byte.
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;  // bytes >= 0x80 pass through unchanged (UTF-8)
    }
  }
  return out + "\"";
}

std::string Num(double v) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);  // shortest round-trip
  return std::string(buf, end);
}

std::string Int(int64_t v) { return std::to_string(v); }
std::string Bool(bool v) { return v ? "true" : "false"; }

template <typename T, typename Fn>
std::string Opt(const std::optional<T>& v, Fn fn) {
  return v ? fn(*v) : "null";
}

class Writer {
 public:
  void Section(const char* name) { text_ += std::string(name) + ":\n"; }
  void Key(const char* key, const std::string& value, int indent = 2) {
    text_ += std::string(indent, ' ') + key + ":" + (value.empty() ? "" : " " + value) + "\n";
  }
  std::string Take() { return std::move(text_); }

 private:
  std::string text_ = "# Resolved DPO job spec (every key; see docs/job_spec.md)\n";
};

}  // namespace

std::string ToYaml(const JobSpec& spec) {
  Writer w;
  const ModelSection& m = spec.model;
  w.Section("model");
  w.Key("path", Opt(m.path, Quoted));
  if (m.random) {
    w.Key("random", "");
    w.Key("config", Quoted(m.random->config), 4);
    w.Key("seed", Int(m.random->seed), 4);
  } else {
    w.Key("random", "null");
  }
  w.Key("dtype", std::string(ToString(m.dtype)));
  w.Key("device", std::string(ToString(m.device)));

  w.Section("tokenizer");
  w.Key("path", Quoted(spec.tokenizer.path));

  const DataSection& d = spec.data;
  w.Section("data");
  w.Key("train", Quoted(d.train));
  w.Key("eval", Opt(d.eval, Quoted));
  w.Key("eval_fraction", Num(d.eval_fraction));
  w.Key("chat_template", std::string(ToString(d.chat_template)));
  w.Key("implicit_prompt", std::string(ToString(d.implicit_prompt)));
  w.Key("max_length", Opt(d.max_length, Int));
  w.Key("max_prompt_length", Opt(d.max_prompt_length, Int));
  w.Key("max_completion_length", Opt(d.max_completion_length, Int));
  w.Key("truncation_mode", std::string(ToString(d.truncation_mode)));
  w.Key("on_error", std::string(ToString(d.on_error)));
  w.Key("prepared_dir", Quoted(d.prepared_dir));
  w.Key("shuffle_seed", Int(d.shuffle_seed));
  w.Key("train_sampling_strategy", std::string(ToString(d.train_sampling_strategy)));
  w.Key("num_workers", Opt(d.num_workers, Int));
  w.Key("padding_free", Bool(d.padding_free));
  w.Key("max_line_bytes", Int(d.max_line_bytes));

  const DpoLossOptions& p = spec.dpo;
  w.Section("dpo");
  w.Key("beta", Num(p.beta));
  std::string losses;
  for (LossType l : p.loss_type) {
    losses += (losses.empty() ? "" : ", ") + std::string(NameOf(LossTypeNames(), l));
  }
  w.Key("loss_type", "[" + losses + "]");
  w.Key("loss_weights", Opt(p.loss_weights, [](const std::vector<double>& ws) {
          std::string list;
          for (double x : ws) list += (list.empty() ? "" : ", ") + Num(x);
          return "[" + list + "]";
        }));
  w.Key("label_smoothing", Num(p.label_smoothing));
  w.Key("f_divergence_type", std::string(NameOf(FDivergenceNames(), p.f_divergence_type)));
  w.Key("f_alpha_divergence_coef", Num(p.f_alpha_divergence_coef));
  w.Key("ld_alpha", Opt(p.ld_alpha, Num));
  w.Key("use_weighting", Bool(p.use_weighting));
  w.Key("discopop_tau", Num(p.discopop_tau));
  w.Key("simpo_gamma", Num(p.simpo_gamma));

  const TrainSection& t = spec.train;
  w.Section("train");
  w.Key("seed", Int(t.seed));
  w.Key("per_device_train_batch_size", Int(t.per_device_train_batch_size));
  w.Key("per_device_eval_batch_size", Int(t.per_device_eval_batch_size));
  w.Key("gradient_accumulation_steps", Int(t.gradient_accumulation_steps));
  w.Key("learning_rate", Num(t.learning_rate));
  w.Key("weight_decay", Num(t.weight_decay));
  w.Key("adam_beta1", Num(t.adam_beta1));
  w.Key("adam_beta2", Num(t.adam_beta2));
  w.Key("adam_epsilon", Num(t.adam_epsilon));
  w.Key("max_grad_norm", Num(t.max_grad_norm));
  w.Key("lr_scheduler_type", std::string(ToString(t.lr_scheduler_type)));
  w.Key("warmup_steps", Num(t.warmup_steps));
  w.Key("num_train_epochs", Num(t.num_train_epochs));
  w.Key("max_steps", Int(t.max_steps));
  w.Key("dataloader_drop_last", Bool(t.dataloader_drop_last));
  w.Key("logging_steps", Int(t.logging_steps));
  w.Key("eval_steps", Opt(t.eval_steps, Int));
  w.Key("save_steps", Int(t.save_steps));
  w.Key("save_total_limit", Opt(t.save_total_limit, Int));
  w.Key("bf16", Opt(t.bf16, Bool));
  w.Key("gradient_checkpointing", Bool(t.gradient_checkpointing));
  w.Key("logprob_chunk_size", Int(t.logprob_chunk_size));
  w.Key("max_consecutive_bad_steps", Int(t.max_consecutive_bad_steps));
  w.Key("sharding", std::string(ToString(t.sharding)));
  w.Key("reduce_dtype", std::string(ToString(t.reduce_dtype)));
  w.Key("collective_timeout_seconds", Num(t.collective_timeout_seconds));

  const ReferenceSection& r = spec.reference;
  w.Section("reference");
  w.Key("mode", std::string(ToString(r.mode)));
  w.Key("path", Opt(r.path, Quoted));
  w.Key("precompute_batch_size", Opt(r.precompute_batch_size, Int));

  const OutputSection& o = spec.output;
  w.Section("output");
  w.Key("dir", Quoted(o.dir));
  w.Key("resume_from_checkpoint", Opt(o.resume_from_checkpoint, Quoted));
  w.Key("metrics_file", Quoted(o.metrics_file));
  return w.Take();
}

}  // namespace dpo
