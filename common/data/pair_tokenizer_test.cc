#include "common/data/pair_tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "common/data/data_test_util.h"

namespace dpo {
namespace {

using testing::ByteTokenizer;
using testing::Ids;

std::vector<TokenId> Cat(std::vector<TokenId> a, const std::vector<TokenId>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

PreferenceRecord Text(std::string prompt, std::string chosen, std::string rejected) {
  PreferenceRecord r;
  r.prompt = std::move(prompt), r.chosen = std::move(chosen), r.rejected = std::move(rejected);
  return r;
}

TEST(PairTokenizerTest, TextAddsBosToPromptAndEosToCompletions) {
  ByteTokenizer tok;
  PairTokenizer pt(tok, {});
  auto pair = pt.Tokenize(Text("Q:", " yes", " no</s>"), "f:1");
  ASSERT_TRUE(pair);
  EXPECT_EQ(pair->prompt, Cat({ByteTokenizer::kBos}, Ids("Q:")));
  EXPECT_EQ(pair->chosen, Cat(Ids(" yes"), {ByteTokenizer::kEos}));
  EXPECT_EQ(pair->rejected, Cat(Ids(" no"), {ByteTokenizer::kEos}));  // no second EOS
}

TEST(PairTokenizerTest, LimitsKeepPromptEndAndCompletionStartAndDropWhatCannotFit) {
  ByteTokenizer tok;
  TokenizeOptions o;
  o.max_length = 0;
  o.max_prompt_length = 3;
  o.max_completion_length = 2;
  auto pair = PairTokenizer(tok, o).Tokenize(Text("abcdef", "xyz", "w"), "f:1");
  ASSERT_TRUE(pair);
  EXPECT_EQ(pair->prompt, Ids("def"));
  EXPECT_EQ(pair->chosen, Ids("xy"));
  EXPECT_EQ(pair->rejected, Cat(Ids("w"), {ByteTokenizer::kEos}));

  TokenizeOptions keep_start;
  keep_start.max_length = 5;
  PairTokenizer short_pt(tok, keep_start);
  auto cut = short_pt.Tokenize(Text("abc", "xyz", "w"), "f:1");  // prompt = <s>abc (4 tokens)
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->chosen, Ids("x"));
  EXPECT_EQ(cut->rejected, Ids("w"));
  EXPECT_FALSE(short_pt.Tokenize(Text("abcd", "x", "y"), "f:1"));  // prompt fills max_length

  keep_start.truncation_mode = TruncationMode::kKeepEnd;
  auto kept = PairTokenizer(tok, keep_start).Tokenize(Text("abcd", "x", "y"), "f:1");
  ASSERT_TRUE(kept);  // keep_end never drops: the completion's end survives collation
  EXPECT_EQ(kept->prompt.size(), 5u);
}

TEST(PairTokenizerTest, ConversationalUsesTemplateWithoutSpecialTokens) {
  ByteTokenizer tok("[INST]");  // recognised as the Mistral template
  PairTokenizer pt(tok, {});
  PreferenceRecord r;
  r.conversational = true;
  r.prompt_messages = {{"user", "Hi"}};
  r.chosen_messages = {{"assistant", "Yo"}};
  r.rejected_messages = {{"assistant", "No"}};
  auto pair = pt.Tokenize(r, "f:1");
  ASSERT_TRUE(pair);
  EXPECT_EQ(pair->prompt, Cat({ByteTokenizer::kBos}, Ids("[INST] Hi [/INST]")));
  EXPECT_EQ(pair->chosen, Cat(Ids("Yo"), {ByteTokenizer::kEos}));
  // A tokenizer without a recognisable template rejects conversations, not text pairs.
  ByteTokenizer plain;
  PairTokenizer no_template(plain, {});
  EXPECT_TRUE(no_template.Tokenize(Text("a", "b", "c"), "f:1"));
  EXPECT_THROW(no_template.Tokenize(r, "f:1"), Error);
  TokenizeOptions named;
  named.chat_template = "chatml";
  auto chatml = PairTokenizer(plain, named).Tokenize(r, "f:1");
  ASSERT_TRUE(chatml);
  EXPECT_EQ(chatml->chosen, Ids("Yo<|im_end|>\n"));
  named.chat_template = "auto";  // the job spec's spelling of "recognise it"
  EXPECT_THROW(PairTokenizer(plain, named).Tokenize(r, "f:1"), Error);
  EXPECT_TRUE(PairTokenizer(tok, named).Tokenize(r, "f:1"));
  EXPECT_EQ(ParseTruncationMode("keep_end"), TruncationMode::kKeepEnd);
  EXPECT_THROW(ParseTruncationMode("left"), Error);
}

}  // namespace
}  // namespace dpo
