#include "common/data/chat_template.h"

#include <gtest/gtest.h>

namespace dpo {
namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "Be brief."}, {"user", "Sky?"}, {"assistant", "Blue."}, {"user", "  Sun?\n"}};

TEST(ChatTemplateTest, ChatMlAndQwen3) {
  auto chatml = ChatTemplate::FromName("chatml", "", "<|im_end|>");
  EXPECT_EQ(chatml.Render({{"user", "Hi"}, {"assistant", "Yo"}}, true, "f:1"),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n<|im_start|>assistant\n");
  auto qwen = ChatTemplate::Detect("{%- if tools %}<|im_start|>...<think>", "", "<|im_end|>");
  EXPECT_EQ(qwen.name(), "qwen3");
  // An assistant turn before the last query has no think block; the final one gets an empty one.
  EXPECT_EQ(qwen.Render({{"user", "a"}, {"assistant", "b"}, {"user", "c"}, {"assistant", "<think>\nhm\n</think>\n\nd"}},
                        false, "f:1"),
            "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nhm\n</think>\n\nd<|im_end|>\n");
  EXPECT_EQ(qwen.Render({{"user", "a"}, {"assistant", "b"}}, false, "f:1"),
            "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nb<|im_end|>\n");
  try {
    qwen.Render({{"tool", "x"}}, false, "f.jsonl:3");
    FAIL();
  } catch (const RecordError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("f.jsonl:3: messages[0].role: \"tool\"", 0), 0u) << e.what();
  }
}

TEST(ChatTemplateTest, ChatMlDefaultSystemTurnFromTheTemplate) {
  // SmolLM2's template (real newlines in the literal) and Qwen2.5's spelling (Jinja's \n escape).
  const std::string smollm =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
      "{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}{% endif %}"
      "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
  const std::string qwen25 =
      "{%- else %}{{- \"<|im_start|>system\\nYou are Qwen, it's \\\"me\\\".<|im_end|>\\n\" }}"
      "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}";
  for (const auto& [jinja, turn] :
       {std::pair{smollm, std::string("<|im_start|>system\nYou are SmolLM<|im_end|>\n")},
        std::pair{qwen25, std::string("<|im_start|>system\nYou are Qwen, it's \"me\".<|im_end|>\n")}}) {
    auto chatml = ChatTemplate::Detect(jinja, "", "<|im_end|>");
    EXPECT_EQ(chatml.name(), "chatml");
    EXPECT_EQ(chatml.Render({{"user", "Hi"}}, true, ""),
              turn + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(chatml.Render({{"system", "S"}, {"user", "Hi"}}, false, ""),
              "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    EXPECT_EQ(chatml.Render({}, true, ""), "<|im_start|>assistant\n");
  }
  // A system literal that is only the turn's opening is no default.
  EXPECT_EQ(ChatTemplate::Detect(qwen25.substr(qwen25.find("{{- '")), "", "").Render({{"user", "a"}}, false, ""),
            "<|im_start|>user\na<|im_end|>\n");
}

TEST(ChatTemplateTest, Llama3BaseAndInstruct) {
  auto base = ChatTemplate::Detect("{{ '<|start_header_id|>' }}", "<|begin_of_text|>", "<|end_of_text|>");
  auto instruct = ChatTemplate::Detect("<|start_header_id|>{% if add_generation_prompt %}", "<B>", "<E>");
  std::vector<ChatMessage> m = {{"user", " Hi \n"}};
  EXPECT_EQ(base.Render(m, false, ""),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(instruct.Render(m, false, ""), "<B><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  EXPECT_EQ(instruct.name(), "llama3");
  EXPECT_EQ(base.name(), "llama3-base");
}

TEST(ChatTemplateTest, MistralAlternatesAndRejectsSystem) {
  auto mistral = ChatTemplate::FromName("mistral", "<s>", "</s>");
  EXPECT_EQ(mistral.Render({{"user", "Hi"}, {"assistant", "Yo"}, {"user", "Bye"}}, true, ""),
            "<s>[INST] Hi [/INST]Yo</s>[INST] Bye [/INST]");
  EXPECT_THROW(mistral.Render(kConversation, true, "f:1"), RecordError);
  EXPECT_THROW(ChatTemplate::FromName("jinja", "", ""), Error);
  EXPECT_THROW(ChatTemplate::Detect("", "", ""), Error);
  EXPECT_THROW(ChatTemplate::Detect("{{ unknown }}", "", ""), Error);
}

}  // namespace
}  // namespace dpo
