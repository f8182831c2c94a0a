#include "common/data/pair_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace dpo {
namespace {

size_t CommonPrefix(const std::vector<TokenId>& a, const std::vector<TokenId>& b) {
  size_t n = 0, limit = std::min(a.size(), b.size());
  while (n < limit && a[n] == b[n]) ++n;
  return n;
}

std::string TokenText(const Tokenizer& tokenizer, std::optional<TokenId> id) {
  return id ? tokenizer.Decode({*id}, /*skip_special_tokens=*/false) : std::string();
}

// tokenizer.Encode, with a failure (a regex giving up on pathological text) prefixed by the data
// line's file:line, so the error names both the tokenizer file and the line.
std::vector<TokenId> EncodeLine(const Tokenizer& tokenizer, std::string_view text, bool add_special_tokens,
                                const std::string& context) {
  try {
    return tokenizer.Encode(text, add_special_tokens);
  } catch (const Error& e) {
    throw Error(context + ": " + e.what(), e.code());
  }
}

}  // namespace

TruncationMode ParseTruncationMode(const std::string& name) {
  if (name == "keep_start") return TruncationMode::kKeepStart;
  if (name == "keep_end") return TruncationMode::kKeepEnd;
  Fail("truncation_mode", "expected \"keep_start\" or \"keep_end\", got \"" + name + "\"");
}

const char* TruncationModeName(TruncationMode mode) {
  return mode == TruncationMode::kKeepStart ? "keep_start" : "keep_end";
}

std::string TokenizeOptions::ToJson() const {
  nlohmann::ordered_json j;
  j["max_length"] = max_length;
  j["max_prompt_length"] = max_prompt_length;
  j["max_completion_length"] = max_completion_length;
  j["truncation_mode"] = TruncationModeName(truncation_mode);
  j["chat_template"] = chat_template;
  j["implicit_prompt"] = ImplicitPromptName(implicit_prompt);
  return j.dump();
}

PairTokenizer::PairTokenizer(const Tokenizer& tokenizer, TokenizeOptions options)
    : tokenizer_(tokenizer), options_(std::move(options)) {
  if (!tokenizer.eos_id()) Fail("tokenizer", "has no EOS token; completions need one");
  eos_ = *tokenizer.eos_id();
  std::string bos = TokenText(tokenizer, tokenizer.bos_id());
  std::string eos = TokenText(tokenizer, tokenizer.eos_id());
  const bool detect = options_.chat_template.empty() || options_.chat_template == "auto";
  try {
    template_ = detect ? ChatTemplate::Detect(tokenizer.chat_template(), bos, eos)
                       : ChatTemplate::FromName(options_.chat_template, bos, eos);
  } catch (const Error& e) {
    // Text datasets need no template; a bad explicit name is still an error right away.
    if (!detect) throw;
    template_error_ = e.what();
  }
}

const ChatTemplate& PairTokenizer::Template() const {
  if (!template_) throw Error(template_error_);
  return *template_;
}

std::optional<TokenizedPair> PairTokenizer::Tokenize(const PreferenceRecord& record, const std::string& context) const {
  std::vector<TokenId> prompt, with_chosen, with_rejected;
  if (record.conversational) {
    const ChatTemplate& chat = Template();
    auto render = [&](const std::vector<ChatMessage>& completion) {
      std::vector<ChatMessage> all = record.prompt_messages;
      all.insert(all.end(), completion.begin(), completion.end());
      return EncodeLine(tokenizer_, chat.Render(all, false, context), false, context);
    };
    prompt = EncodeLine(tokenizer_, chat.Render(record.prompt_messages, true, context), false, context);
    with_chosen = render(record.chosen_messages);
    with_rejected = render(record.rejected_messages);
  } else {
    auto encode = [&](const std::string& completion) {
      std::vector<TokenId> ids = EncodeLine(tokenizer_, record.prompt + completion, true, context);
      if (ids.empty() || ids.back() != eos_) ids.push_back(eos_);
      return ids;
    };
    prompt = EncodeLine(tokenizer_, record.prompt, true, context);
    with_chosen = encode(record.chosen);
    with_rejected = encode(record.rejected);
  }
  size_t p = std::min(CommonPrefix(prompt, with_chosen), CommonPrefix(prompt, with_rejected));
  TokenizedPair pair;
  pair.prompt.assign(prompt.begin(), prompt.begin() + p);
  pair.chosen.assign(with_chosen.begin() + p, with_chosen.end());
  pair.rejected.assign(with_rejected.begin() + p, with_rejected.end());
  if (options_.max_prompt_length && pair.prompt.size() > options_.max_prompt_length) {
    pair.prompt.erase(pair.prompt.begin(), pair.prompt.end() - options_.max_prompt_length);
  }
  for (auto* completion : {&pair.chosen, &pair.rejected}) {
    if (options_.max_completion_length && completion->size() > options_.max_completion_length) {
      completion->resize(options_.max_completion_length);
    }
  }
  if (options_.max_length && options_.truncation_mode == TruncationMode::kKeepStart) {
    if (pair.prompt.size() >= options_.max_length) return std::nullopt;
    // Lossless: collation keeps only the first max_length tokens of each sequence anyway.
    size_t room = options_.max_length - pair.prompt.size();
    for (auto* completion : {&pair.chosen, &pair.rejected}) {
      if (completion->size() > room) completion->resize(room);
    }
  }
  return pair;
}

}  // namespace dpo
