// dpo-tokenize: JSON lines through a tokenizer.json tokenizer.
//
//   dpo-tokenize --tokenizer PATH [--add-special-tokens]     {"text": ...}  -> {"ids": [...]}
//   dpo-tokenize --tokenizer PATH --decode [--skip-special-tokens]  {"ids": [...]} -> {"text": ...}
//   dpo-tokenize --tokenizer PATH --bench SECONDS [--add-special-tokens]
//
// PATH is a tokenizer.json or a directory holding one (and tokenizer_config.json). One output
// line per input line, in order. --bench reads all {"text"} lines, encodes them repeatedly on one
// thread for at least SECONDS and prints {"bytes", "seconds", "mb_per_s", "tokens"} (MB = 1e6
// bytes). Exit status (docs/cli.md): 0 success; 1 the tokenizer cannot be loaded or a bad line
// ("stdin:N: ..." on stderr, the lines before it written); 2 bad usage.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/tokenizer/tokenizer.h"
#include "common/util/cli.h"
#include "common/util/error.h"

namespace {

using nlohmann::json;

struct Options {
  std::string tokenizer;            // Default: none (required).
  bool add_special_tokens = false;  // Default: off, as HF's encode(add_special_tokens=False).
  bool decode = false;
  bool skip_special_tokens = false;     // Default: off, so decode(encode(x)) keeps special tokens.
  std::optional<double> bench_seconds;  // Default: none = no benchmark.
};

std::string LineContext(size_t line) { return "stdin:" + std::to_string(line); }

json ParseLine(const std::string& line, size_t number) {
  try {
    json j = json::parse(line);
    if (!j.is_object()) dpo::Fail(LineContext(number), "expected a JSON object");
    return j;
  } catch (const json::exception& e) {
    dpo::Fail(LineContext(number), std::string("invalid JSON: ") + e.what());
  }
}

std::string TextField(const json& j, size_t number) {
  auto it = j.find("text");
  if (it == j.end() || !it->is_string()) dpo::Fail(LineContext(number), "\"text\" must be a string");
  return it->get<std::string>();
}

std::vector<dpo::TokenId> IdsField(const json& j, size_t number) {
  auto it = j.find("ids");
  if (it == j.end() || !it->is_array()) dpo::Fail(LineContext(number), "\"ids\" must be an array");
  std::vector<dpo::TokenId> ids;
  ids.reserve(it->size());
  for (const json& v : *it) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
      dpo::Fail(LineContext(number), "\"ids\" must hold non-negative 32-bit integers");
    ids.push_back(v.get<dpo::TokenId>());
  }
  return ids;
}

void AppendIds(const std::vector<dpo::TokenId>& ids, std::string* out) {
  *out += "{\"ids\":[";
  char buf[16];
  for (size_t i = 0; i < ids.size(); ++i) {
    int n = std::snprintf(buf, sizeof(buf), i ? ",%d" : "%d", ids[i]);
    out->append(buf, n);
  }
  *out += "]}\n";
}

int Bench(const dpo::Tokenizer& tok, const Options& o) {
  std::vector<std::string> texts;
  std::string line;
  size_t number = 0, bytes = 0;
  while (std::getline(std::cin, line)) {
    ++number;  // before the call: its arguments are evaluated in no fixed order
    texts.push_back(TextField(ParseLine(line, number), number));
    bytes += texts.back().size();
  }
  using Clock = std::chrono::steady_clock;
  size_t total_bytes = 0, tokens = 0;
  auto start = Clock::now();
  double seconds = 0;
  do {
    for (const std::string& t : texts) tokens += tok.Encode(t, o.add_special_tokens).size();
    total_bytes += bytes;
    seconds = std::chrono::duration<double>(Clock::now() - start).count();
  } while (seconds < *o.bench_seconds && bytes > 0);
  json r = {{"bytes", total_bytes},
            {"seconds", seconds},
            {"tokens", tokens},
            {"mb_per_s", seconds > 0 ? static_cast<double>(total_bytes) / seconds / 1e6 : 0.0}};
  std::cout << r.dump() << "\n";
  return dpo::cli::kExitOk;
}

int Run(const Options& o) {
  auto tok = dpo::Tokenizer::Load(o.tokenizer);
  if (o.bench_seconds) return Bench(*tok, o);
  std::string line, out;
  size_t number = 0;
  while (std::getline(std::cin, line)) {
    json j = ParseLine(line, ++number);
    if (o.decode) {
      json r = {{"text", tok->Decode(IdsField(j, number), o.skip_special_tokens)}};
      out += r.dump(-1, ' ', false, json::error_handler_t::replace);
      out += '\n';
    } else {
      AppendIds(tok->Encode(TextField(j, number), o.add_special_tokens), &out);
    }
    if (out.size() > (1 << 16)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return std::fflush(stdout) == 0 ? dpo::cli::kExitOk : dpo::cli::kExitFailure;
}

}  // namespace

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  dpo::cli::App app(
      "Encodes JSON lines {\"text\": ...} on stdin to {\"ids\": [...]} on stdout, one output line\n"
      "per input line, in order (or decodes them back with --decode).",
      "dpo-tokenize");
  Options o;
  app.add_option("--tokenizer", o.tokenizer, "a tokenizer.json, or a directory holding one (and tokenizer_config.json)")
      ->type_name("PATH")
      ->required();
  app.add_flag("--add-special-tokens", o.add_special_tokens,
               "add the tokenizer's special tokens (BOS, ...) as HF's encode(add_special_tokens=True)");
  app.add_flag("--decode", o.decode, "read {\"ids\": [...]} lines and write {\"text\": ...}");
  app.add_flag("--skip-special-tokens", o.skip_special_tokens,
               "with --decode: leave special tokens out of the text (default: kept, so\n"
               "decode(encode(x)) == x)");
  app.add_option("--bench", o.bench_seconds,
                 "read all {\"text\"} lines, encode them repeatedly on one thread for at least\n"
                 "SECONDS and print {\"bytes\", \"seconds\", \"mb_per_s\", \"tokens\"} (MB = 1e6 bytes)")
      ->type_name("SECONDS")
      ->check(dpo::cli::Real(0, false));
  app.footer(
      "Exit status: 0 success; 1 the tokenizer cannot be loaded or a bad line (\"stdin:N: ...\"\n"
      "on stderr); 2 bad usage.");
  if (const auto exit = dpo::cli::Parse(app, argc, argv)) return *exit;
  try {
    return Run(o);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "dpo-tokenize: %s\n", e.what());
    return dpo::cli::kExitFailure;
  }
}
