// One preference pair parsed from a JSONL line, in any of the forms TRL's DPOTrainer accepts:
//
//   explicit text             {"prompt": str, "chosen": str, "rejected": str}
//   implicit text             {"chosen": str, "rejected": str}  (the prompt is their shared start)
//   explicit conversational   {"prompt": [msg...], "chosen": [msg...], "rejected": [msg...]}
//   implicit conversational   {"chosen": [msg...], "rejected": [msg...]}
//
// where msg is {"role": str, "content": str}. Other keys are ignored.
//
// Implicit text split (ExtractTextPrompt), by rule (data.implicit_prompt):
//   assistant_turn (default): the prompt is the whole shared dialogue, so the completions are
//     whole replies:
//     1. after the last "\n\nAssistant:" that lies inside the common prefix of both texts (the
//        HH-RLHF dialogue form); the completion starts right after the marker (usually " ...");
//     2. otherwise at the last whitespace inside the common prefix: the prompt ends before the
//        whitespace and the completion starts with it, so no word and no UTF-8 sequence is cut;
//     3. otherwise (no whitespace in the common prefix) the prompt is empty.
//   common_prefix: TRL 1.16's extract_prompt: the prompt is the longest common prefix, less
//     one space when it ends with one, so that replies which begin alike (" I think" / " I
//     don't") lose their shared start and a differing word can be cut ("...the ca" | "t sat").
//     TRL counts characters: a prefix never ends inside a UTF-8 sequence here either. When one
//     text is a prefix of the other, TRL's loop leaves the prompt one character short of the
//     shorter text, and so do we; when they differ from the first character the prompt is
//     empty (TRL would index the text's last character there).
//   For HH-RLHF data the two agree whenever both replies differ from their first character
//   (docs/data.md has the counts).
// Implicit conversational: the prompt is the longest run of equal leading messages (as TRL).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/util/error.h"

namespace dpo {

struct ChatMessage {
  std::string role;
  std::string content;
  bool operator==(const ChatMessage&) const = default;
};

struct PreferenceRecord {
  bool conversational = false;
  // Text form (conversational == false).
  std::string prompt, chosen, rejected;
  // Conversational form: the prompt turns and each side's completion turns.
  std::vector<ChatMessage> prompt_messages, chosen_messages, rejected_messages;
};

// How the prompt of an implicit text pair is found (above). Names: "assistant_turn",
// "common_prefix".
enum class ImplicitPrompt { kAssistantTurn, kCommonPrefix };
ImplicitPrompt ParseImplicitPrompt(const std::string& name);  // throws dpo::Error on other names
const char* ImplicitPromptName(ImplicitPrompt rule);

// Why a line was rejected; the names are the keys of a load report's per-reason counts.
enum class RecordErrorKind { kMalformedJson, kMissingField, kWrongType, kEmptyCompletion, kInvalidUtf8 };
const char* RecordErrorName(RecordErrorKind kind);

// A bad line. what() is "file:line: field: what".
class RecordError : public Error {
 public:
  RecordError(RecordErrorKind kind, const std::string& message) : Error(message, ErrorCode::kBadData), kind_(kind) {}
  RecordErrorKind kind() const { return kind_; }

 private:
  RecordErrorKind kind_;
};

// Parses one JSONL line. `context` ("file:line") prefixes every error. Throws RecordError for
// malformed JSON, a missing or non-string field, invalid UTF-8, or an empty completion (after
// extracting an implicit prompt by `rule`). Never throws anything else for any input bytes.
PreferenceRecord ParsePreferenceLine(std::string_view line, std::string_view context,
                                     ImplicitPrompt rule = ImplicitPrompt::kAssistantTurn);

// The split of an implicit text pair by `rule` (above): returns the prompt length in bytes, a
// prefix of both texts.
size_t ExtractTextPrompt(std::string_view chosen, std::string_view rejected,
                         ImplicitPrompt rule = ImplicitPrompt::kAssistantTurn);

// Byte offset of the first invalid UTF-8 sequence in `text`, or npos when it is valid.
size_t FindInvalidUtf8(std::string_view text);

}  // namespace dpo
