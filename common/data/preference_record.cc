#include "common/data/preference_record.h"

#include <nlohmann/json.hpp>

namespace dpo {
namespace {

using nlohmann::json;
constexpr std::string_view kAssistantMarker = "\n\nAssistant:";

[[noreturn]] void Reject(RecordErrorKind kind, std::string_view context, std::string_view field,
                         std::string_view what) {
  std::string message(context);
  message += ": ";
  if (!field.empty()) {
    message += field;
    message += ": ";
  }
  message += what;
  throw RecordError(kind, message);
}

const char* TypeName(const json& value) { return value.type_name(); }

std::string GetString(const json& value, std::string_view context, const std::string& field) {
  if (!value.is_string()) {
    Reject(RecordErrorKind::kWrongType, context, field, std::string("expected a string, got ") + TypeName(value));
  }
  return value.get<std::string>();
}

std::vector<ChatMessage> GetMessages(const json& value, std::string_view context, const std::string& field) {
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < value.size(); ++i) {
    const json& item = value[i];
    std::string where = field + "[" + std::to_string(i) + "]";
    if (!item.is_object()) {
      Reject(RecordErrorKind::kWrongType, context, where,
             std::string("expected a {role, content} object, got ") + TypeName(item));
    }
    ChatMessage message;
    for (const char* key : {"role", "content"}) {
      auto it = item.find(key);
      if (it == item.end()) Reject(RecordErrorKind::kMissingField, context, where + "." + key, "missing");
      (key[0] == 'r' ? message.role : message.content) = GetString(*it, context, where + "." + key);
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

const json& Field(const json& object, std::string_view context, const char* name) {
  auto it = object.find(name);
  if (it == object.end()) Reject(RecordErrorKind::kMissingField, context, name, "missing");
  return *it;
}

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// A UTF-8 continuation byte: never the first byte of a character.
bool IsContinuation(char c) { return (static_cast<unsigned char>(c) & 0xc0) == 0x80; }

// TRL 1.16's extract_prompt on strings, in bytes of valid UTF-8 (see the header).
size_t CommonPrefixPrompt(std::string_view chosen, std::string_view rejected) {
  const size_t limit = std::min(chosen.size(), rejected.size());
  size_t lcp = 0;
  while (lcp < limit && chosen[lcp] == rejected[lcp]) ++lcp;
  if (lcp == limit) {
    // No character differs: TRL's loop ends on the shorter text's last character.
    size_t cut = limit;
    while (cut > 0 && IsContinuation(chosen[cut - 1])) --cut;
    return cut > 0 ? cut - 1 : 0;
  }
  // The first differing character starts at the last character boundary at or before lcp.
  while (lcp > 0 && IsContinuation(chosen[lcp])) --lcp;
  if (lcp > 0 && chosen[lcp - 1] == ' ') --lcp;
  return lcp;
}

}  // namespace

const char* RecordErrorName(RecordErrorKind kind) {
  switch (kind) {
    case RecordErrorKind::kMalformedJson: return "malformed_json";
    case RecordErrorKind::kMissingField: return "missing_field";
    case RecordErrorKind::kWrongType: return "wrong_type";
    case RecordErrorKind::kEmptyCompletion: return "empty_completion";
    case RecordErrorKind::kInvalidUtf8: return "invalid_utf8";
  }
  return "unknown";
}

size_t FindInvalidUtf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size(), i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4, cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are invalid.
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff)) {
      return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

ImplicitPrompt ParseImplicitPrompt(const std::string& name) {
  if (name == "assistant_turn") return ImplicitPrompt::kAssistantTurn;
  if (name == "common_prefix") return ImplicitPrompt::kCommonPrefix;
  Fail("implicit_prompt", "expected assistant_turn or common_prefix, got \"" + name + "\"");
}

const char* ImplicitPromptName(ImplicitPrompt rule) {
  return rule == ImplicitPrompt::kCommonPrefix ? "common_prefix" : "assistant_turn";
}

size_t ExtractTextPrompt(std::string_view chosen, std::string_view rejected, ImplicitPrompt rule) {
  if (rule == ImplicitPrompt::kCommonPrefix) return CommonPrefixPrompt(chosen, rejected);
  size_t lcp = 0, limit = std::min(chosen.size(), rejected.size());
  while (lcp < limit && chosen[lcp] == rejected[lcp]) ++lcp;
  std::string_view common = chosen.substr(0, lcp);
  size_t marker = common.rfind(kAssistantMarker);
  if (marker != std::string_view::npos) return marker + kAssistantMarker.size();
  if (lcp == limit) return lcp;  // one text is a prefix of the other; the caller rejects it
  // Cut before the whitespace run that ends the common prefix's last word.
  size_t cut = lcp;
  while (cut > 0 && !IsSpace(common[cut - 1])) --cut;
  while (cut > 0 && IsSpace(common[cut - 1])) --cut;
  return cut;
}

PreferenceRecord ParsePreferenceLine(std::string_view line, std::string_view context, ImplicitPrompt rule) {
  size_t bad = FindInvalidUtf8(line);
  if (bad != std::string_view::npos) {
    Reject(RecordErrorKind::kInvalidUtf8, context, "", "invalid UTF-8 at byte " + std::to_string(bad) + " of the line");
  }
  json doc = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) Reject(RecordErrorKind::kMalformedJson, context, "", "malformed JSON");
  if (!doc.is_object()) {
    Reject(RecordErrorKind::kMalformedJson, context, "", std::string("expected a JSON object, got ") + TypeName(doc));
  }
  const json& chosen = Field(doc, context, "chosen");
  const json& rejected = Field(doc, context, "rejected");
  auto prompt_it = doc.find("prompt");
  bool has_prompt = prompt_it != doc.end();
  PreferenceRecord record;
  record.conversational = chosen.is_array();
  if (record.conversational) {
    if (!rejected.is_array()) {
      Reject(RecordErrorKind::kWrongType, context, "rejected",
             std::string("expected a list of messages like \"chosen\", got ") + TypeName(rejected));
    }
    record.chosen_messages = GetMessages(chosen, context, "chosen");
    record.rejected_messages = GetMessages(rejected, context, "rejected");
    // As TRL's maybe_extract_prompt: a non-list "prompt" beside list completions is ignored and
    // the prompt is extracted from the completions.
    if (has_prompt && prompt_it->is_array()) {
      record.prompt_messages = GetMessages(*prompt_it, context, "prompt");
    } else {
      auto& c = record.chosen_messages;
      auto& r = record.rejected_messages;
      size_t common = 0;
      while (common < c.size() && common < r.size() && c[common] == r[common]) ++common;
      record.prompt_messages.assign(c.begin(), c.begin() + common);
      c.erase(c.begin(), c.begin() + common);
      r.erase(r.begin(), r.begin() + common);
    }
    if (record.chosen_messages.empty())
      Reject(RecordErrorKind::kEmptyCompletion, context, "chosen", "no completion turn");
    if (record.rejected_messages.empty())
      Reject(RecordErrorKind::kEmptyCompletion, context, "rejected", "no completion turn");
    return record;
  }
  record.chosen = GetString(chosen, context, "chosen");
  record.rejected = GetString(rejected, context, "rejected");
  if (has_prompt) {
    record.prompt = GetString(*prompt_it, context, "prompt");
  } else {
    size_t cut = ExtractTextPrompt(record.chosen, record.rejected, rule);
    record.prompt = record.chosen.substr(0, cut);
    record.chosen.erase(0, cut);
    record.rejected.erase(0, cut);
  }
  if (record.chosen.empty()) Reject(RecordErrorKind::kEmptyCompletion, context, "chosen", "empty completion");
  if (record.rejected.empty()) Reject(RecordErrorKind::kEmptyCompletion, context, "rejected", "empty completion");
  return record;
}

}  // namespace dpo
