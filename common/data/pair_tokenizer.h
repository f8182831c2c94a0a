// Turns a PreferenceRecord into token ids the way TRL 1.16's DPOTrainer does
// (_prepare_dataset + DataCollatorForPreference), so a model sees the same sequences:
//
//   text:  prompt_ids = Encode(prompt, add_special_tokens=true) (BOS when the tokenizer adds
//          one); each side = Encode(prompt + completion, true) with EOS appended unless it
//          already ends with EOS. conversational: the chat template renders the prompt with the
//          generation prompt and prompt+completion without; tokenized with no special tokens.
//   split: the completion starts where the prompt's ids and the prompt+completion's ids stop
//          agreeing (the shorter agreement of the two sides), since tokens can merge across
//          the boundary.
//   limits (our additions, off by default): max_prompt_length keeps the prompt's END (the part
//          next to the completion); max_completion_length keeps each completion's START.
//   max_length: each sequence prompt+completion is cut to max_length at collation
//          (batch.h), keeping its start (keep_start) or its end (keep_end), as TRL's collator.
//
// A pair "cannot fit", and is dropped and counted, when under keep_start its prompt alone has
// max_length tokens or more: no completion token would remain (TRL filters the same pairs).
// Under keep_end every pair keeps its completion's end, so none is dropped.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "common/data/chat_template.h"
#include "common/data/preference_record.h"
#include "common/tokenizer/tokenizer.h"

namespace dpo {

enum class TruncationMode { kKeepStart, kKeepEnd };
TruncationMode ParseTruncationMode(const std::string& name);  // "keep_start" | "keep_end"
const char* TruncationModeName(TruncationMode mode);

struct TokenizeOptions {
  // Longest sequence (prompt + one completion). 0 = no limit. Default: 1024, TRL's DPOConfig.
  size_t max_length = 1024;
  // Longest prompt (keeps its end). 0 = no limit. Default: 0, TRL 1.16 has no such limit.
  size_t max_prompt_length = 0;
  // Longest completion (keeps its start). 0 = no limit. Default: 0, as TRL 1.16.
  size_t max_completion_length = 0;
  // Which end of an over-long sequence survives. Default: keep_start, TRL's default.
  TruncationMode truncation_mode = TruncationMode::kKeepStart;
  // Chat template for conversational data: "" or "auto" recognises it from the tokenizer's
  // chat_template, else chatml | qwen3 | llama3 | mistral. Default: "" (the tokenizer's own).
  std::string chat_template;
  // How the prompt of an implicit text pair ({chosen, rejected} strings) is found
  // (preference_record.h). Applied where lines are parsed (PrepareDataset); kept here so that
  // it is part of the options a prepared file records and hashes. Default: assistant_turn, whole
  // replies as completions (docs/data.md weighs it against TRL's common_prefix).
  ImplicitPrompt implicit_prompt = ImplicitPrompt::kAssistantTurn;

  // Canonical JSON of these options (the prepared file records it and hashes it).
  std::string ToJson() const;
};

struct TokenizedPair {
  std::vector<TokenId> prompt, chosen, rejected;
};

class PairTokenizer {
 public:
  // Keeps a reference to `tokenizer`, which must outlive this. Throws dpo::Error when the
  // tokenizer has no EOS token.
  PairTokenizer(const Tokenizer& tokenizer, TokenizeOptions options);

  // Returns nullopt when the pair cannot fit (see above). Thread-safe. Throws RecordError for
  // a conversation the chat template rejects (context names file:line), and dpo::Error
  // "file:line: <tokenizer file>: <field>: ..." when the tokenizer fails on the text.
  std::optional<TokenizedPair> Tokenize(const PreferenceRecord& record, const std::string& context) const;

  const TokenizeOptions& options() const { return options_; }

 private:
  const ChatTemplate& Template() const;
  const Tokenizer& tokenizer_;
  TokenizeOptions options_;
  TokenId eos_;
  std::optional<ChatTemplate> template_;  // resolved at construction when possible
  std::string template_error_;            // why not, reported on the first conversation
};

}  // namespace dpo
