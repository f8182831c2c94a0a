#include "common/data/chat_template.h"

namespace dpo {
namespace {

bool IsJinjaSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

// Jinja's trim / Python's str.strip() on ASCII whitespace.
std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsJinjaSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsJinjaSpace(s.back())) s.remove_suffix(1);
  return s;
}
std::string_view StripChar(std::string_view s, char c, bool left, bool right) {
  while (left && !s.empty() && s.front() == c) s.remove_prefix(1);
  while (right && !s.empty() && s.back() == c) s.remove_suffix(1);
  return s;
}

[[noreturn]] void BadRole(std::string_view context, size_t index, std::string_view role, std::string_view family) {
  throw RecordError(RecordErrorKind::kWrongType, std::string(context) + ": messages[" + std::to_string(index) +
                                                     "].role: \"" + std::string(role) + "\" is not supported by the " +
                                                     std::string(family) + " chat template");
}

// The default system turn a ChatML template writes as one string literal, e.g. SmolLM2's
// {{ '<|im_start|>system\nYou are ...<|im_end|>\n' }}: the literal's text with Jinja's escapes
// (\n, \t, \\, \', \") resolved, or "" when the template has no such literal.
std::string DefaultSystemTurn(std::string_view jinja) {
  constexpr std::string_view kOpen = "<|im_start|>system", kClose = "<|im_end|>\n";
  for (size_t at = jinja.find(kOpen); at != std::string_view::npos; at = jinja.find(kOpen, at + 1)) {
    if (at == 0 || (jinja[at - 1] != '\'' && jinja[at - 1] != '"')) continue;
    const char quote = jinja[at - 1];
    std::string text;
    for (size_t i = at; i < jinja.size() && jinja[i] != quote; ++i) {
      if (jinja[i] != '\\' || i + 1 == jinja.size()) {
        text += jinja[i];
        continue;
      }
      const char escaped = jinja[++i];
      text += escaped == 'n' ? '\n' : escaped == 't' ? '\t' : escaped;
    }
    if (text.size() > kOpen.size() + kClose.size() && text.ends_with(kClose)) return text;
  }
  return "";
}

}  // namespace

ChatTemplate ChatTemplate::FromName(std::string_view name, std::string bos, std::string eos) {
  if (name == "chatml") return ChatTemplate(Family::kChatMl, std::move(bos), std::move(eos), false);
  if (name == "qwen3") return ChatTemplate(Family::kQwen3, std::move(bos), std::move(eos), false);
  if (name == "llama3") return ChatTemplate(Family::kLlama3, std::move(bos), std::move(eos), false);
  if (name == "mistral") return ChatTemplate(Family::kMistral, std::move(bos), std::move(eos), false);
  Fail("chat_template", "unknown template \"" + std::string(name) + "\" (expected chatml, qwen3, llama3 or mistral)");
}

ChatTemplate ChatTemplate::Detect(std::string_view jinja, std::string bos, std::string eos) {
  auto has = [&](std::string_view s) { return jinja.find(s) != std::string_view::npos; };
  if (jinja.empty()) {
    Fail("chat_template", "the tokenizer has no chat_template; name one (chatml, qwen3, llama3, mistral)");
  }
  if (has("<|im_start|>")) {
    if (has("<think>")) return ChatTemplate(Family::kQwen3, std::move(bos), std::move(eos), false);
    return ChatTemplate(Family::kChatMl, std::move(bos), std::move(eos), false, DefaultSystemTurn(jinja));
  }
  if (has("<|start_header_id|>")) {
    return ChatTemplate(Family::kLlama3, std::move(bos), std::move(eos), !has("add_generation_prompt"));
  }
  if (has("[INST]")) return ChatTemplate(Family::kMistral, std::move(bos), std::move(eos), false);
  Fail("chat_template",
       "unrecognised chat_template in tokenizer_config.json; name one "
       "(chatml, qwen3, llama3, mistral)");
}

std::string ChatTemplate::name() const {
  switch (family_) {
    case Family::kChatMl: return "chatml";
    case Family::kQwen3: return "qwen3";
    case Family::kLlama3: return always_generation_prompt_ ? "llama3-base" : "llama3";
    case Family::kMistral: return "mistral";
  }
  return "";
}

std::string ChatTemplate::Render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 std::string_view context) const {
  switch (family_) {
    case Family::kChatMl:
    case Family::kQwen3: return RenderChatMl(messages, add_generation_prompt, context);
    case Family::kLlama3: return RenderLlama3(messages, add_generation_prompt);
    case Family::kMistral: return RenderMistral(messages, context);
  }
  return "";
}

std::string ChatTemplate::RenderChatMl(const std::vector<ChatMessage>& messages, bool generation,
                                       std::string_view context) const {
  const bool qwen3 = family_ == Family::kQwen3;
  // Qwen3: the last user message that is not a wrapped tool response.
  size_t last_query = messages.empty() ? 0 : messages.size() - 1;
  for (size_t i = messages.size(); i-- > 0;) {
    const std::string& c = messages[i].content;
    if (messages[i].role == "user" && !(c.starts_with("<tool_response>") && c.ends_with("</tool_response>"))) {
      last_query = i;
      break;
    }
  }
  std::string out;
  if (!messages.empty() && messages[0].role != "system") out = default_system_turn_;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user" || m.role == "system" || (!qwen3 && m.role != "assistant")) {
      if (qwen3 && m.role != "user" && m.role != "system") BadRole(context, i, m.role, name());
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      continue;
    }
    if (m.role != "assistant") BadRole(context, i, m.role, name());
    std::string_view content = m.content;
    if (!qwen3) {
      out += "<|im_start|>assistant\n" + m.content + "<|im_end|>\n";
      continue;
    }
    std::string_view reasoning;
    size_t close = content.rfind("</think>");
    if (close != std::string_view::npos) {
      std::string_view before = content.substr(0, content.find("</think>"));
      size_t open = before.rfind("<think>");
      if (open != std::string_view::npos) before = before.substr(open + 7);
      reasoning = StripChar(StripChar(before, '\n', false, true), '\n', true, false);
      content = StripChar(content.substr(close + 8), '\n', true, false);
    }
    out += "<|im_start|>assistant\n";
    bool last = i + 1 == messages.size();
    if (i > last_query && (last || !reasoning.empty())) {
      out += "<think>\n";
      out += StripChar(reasoning, '\n', true, true);
      out += "\n</think>\n\n";
      out += StripChar(content, '\n', true, false);
    } else {
      out += content;
    }
    out += "<|im_end|>\n";
  }
  if (generation) out += "<|im_start|>assistant\n";
  return out;
}

std::string ChatTemplate::RenderLlama3(const std::vector<ChatMessage>& messages, bool generation) const {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0) out += bos_;
    out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n";
    out += Trim(messages[i].content);
    out += "<|eot_id|>";
  }
  if (generation || always_generation_prompt_) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string ChatTemplate::RenderMistral(const std::vector<ChatMessage>& messages, std::string_view context) const {
  std::string out = bos_;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const char* expected = i % 2 == 0 ? "user" : "assistant";
    if (m.role != expected) BadRole(context, i, m.role, "mistral (roles alternate user/assistant)");
    if (i % 2 == 0) {
      out += "[INST] " + m.content + " [/INST]";
    } else {
      out += m.content + eos_;
    }
  }
  return out;
}

}  // namespace dpo
