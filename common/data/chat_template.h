// Chat templates implemented natively (no Jinja engine), for the model families we train:
//
//   chatml   "<|im_start|>{role}\n{content}<|im_end|>\n" per message; generation prompt
//            "<|im_start|>assistant\n". By name, no default system message; detected from a
//            template that writes a literal "<|im_start|>system\n...<|im_end|>\n" turn (SmolLM2,
//            Qwen2.5), that turn goes first when the first message is not a system one.
//   qwen3    ChatML plus Qwen3's thinking block: an assistant turn after the last user query that
//            is the last message (or carries reasoning) renders as
//            "<think>\n{reasoning}\n</think>\n\n{content}"; reasoning written inline as
//            "<think>..</think>" inside content is split out as Qwen3's template does.
//   llama3   bos + "<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>" per
//            message, then the assistant header as the generation prompt. The Llama-3 base
//            tokenizer_config template emits that header unconditionally; the Instruct one only
//            with add_generation_prompt: `always_generation_prompt` tells them apart.
//   mistral  Mistral-7B-Instruct v0.1/v0.2: bos, then "[INST] {user} [/INST]" and
//            "{assistant}" + eos, roles alternating user/assistant from a user turn.
//
// Tool calls and tool messages are not supported; a message with another role is rejected.
// The oracle test (tests/oracle/test_data_chat_template.py) checks each against transformers'
// apply_chat_template with the real template strings.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/data/preference_record.h"

namespace dpo {

class ChatTemplate {
 public:
  enum class Family { kChatMl, kQwen3, kLlama3, kMistral };

  // By name: "chatml", "qwen3", "llama3" or "mistral". Throws dpo::Error otherwise.
  static ChatTemplate FromName(std::string_view name, std::string bos_token, std::string eos_token);
  // Recognises the family from a tokenizer_config.json "chat_template" string. Throws
  // dpo::Error when it is empty or unknown (then pass a name).
  static ChatTemplate Detect(std::string_view jinja, std::string bos_token, std::string eos_token);

  // Renders `messages`. Throws RecordError (kWrongType, naming `context` and the message) on a
  // role the family does not support.
  std::string Render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     std::string_view context) const;

  Family family() const { return family_; }
  std::string name() const;

 private:
  ChatTemplate(Family family, std::string bos, std::string eos, bool always_generation_prompt,
               std::string default_system_turn = "")
      : family_(family),
        bos_(std::move(bos)),
        eos_(std::move(eos)),
        always_generation_prompt_(always_generation_prompt),
        default_system_turn_(std::move(default_system_turn)) {}
  std::string RenderChatMl(const std::vector<ChatMessage>& messages, bool generation, std::string_view context) const;
  std::string RenderLlama3(const std::vector<ChatMessage>& messages, bool generation) const;
  std::string RenderMistral(const std::vector<ChatMessage>& messages, std::string_view context) const;

  Family family_;
  std::string bos_, eos_;
  bool always_generation_prompt_;
  // chatml only: the rendered system turn put before a conversation that has none; empty: none.
  std::string default_system_turn_;
};

}  // namespace dpo
