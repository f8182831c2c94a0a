#include "common/data/preference_record.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/data/data_test_util.h"
#include "common/data/line_reader.h"
#include "common/data/preference_reader.h"

namespace dpo {
namespace {

using nlohmann::json;

RecordErrorKind KindOf(const std::string& line, std::string* message = nullptr) {
  try {
    ParsePreferenceLine(line, "f.jsonl:7");
  } catch (const RecordError& e) {
    if (message) *message = e.what();
    return e.kind();
  }
  ADD_FAILURE() << "no error for " << line;
  return RecordErrorKind::kMalformedJson;
}

TEST(PreferenceRecordTest, ExplicitText) {
  auto r = ParsePreferenceLine(R"({"prompt":"Q?","chosen":" yes","rejected":" no","x":1})", "f:1");
  EXPECT_FALSE(r.conversational);
  EXPECT_EQ(r.prompt, "Q?");
  EXPECT_EQ(r.chosen, " yes");
  EXPECT_EQ(r.rejected, " no");
}

TEST(PreferenceRecordTest, ImplicitHhDialogueSplitsAfterLastSharedAssistantMarker) {
  // The replies share their first word: TRL would cut after " I"; we cut at the marker.
  std::string prompt = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant:";
  json line = {{"chosen", prompt + " I am fine."}, {"rejected", prompt + " I won't say."}};
  auto r = ParsePreferenceLine(line.dump(), "f:1");
  EXPECT_EQ(r.prompt, prompt);
  EXPECT_EQ(r.chosen, " I am fine.");
  EXPECT_EQ(r.rejected, " I won't say.");
}

TEST(PreferenceRecordTest, ImplicitPlainTextCutsAtWhitespaceNotInsideAWord) {
  // The common prefix is "The cat s"; TRL would cut inside "sat"/"slept".
  EXPECT_EQ(ExtractTextPrompt("The cat sat down", "The cat slept"), 7u);
  EXPECT_EQ(ExtractTextPrompt("The cat sat", "The cat ran"), 7u);
  EXPECT_EQ(ExtractTextPrompt("abc", "abd"), 0u);
  // Multi-byte characters sharing a leading byte are never split.
  EXPECT_EQ(ExtractTextPrompt("x \xc3\xa9t\xc3\xa9", "x \xc3\xa0"), 1u);
  json line = {{"chosen", "The cat sat down"}, {"rejected", "The cat slept"}};
  auto r = ParsePreferenceLine(line.dump(), "f:1");
  EXPECT_EQ(r.prompt, "The cat");
  EXPECT_EQ(r.chosen, " sat down");
  EXPECT_EQ(r.rejected, " slept");
}

TEST(PreferenceRecordTest, CommonPrefixRuleIsTrlsExtractPrompt) {
  // The Python oracle (tests/oracle/test_implicit_prompt.py) checks HH-RLHF against TRL itself;
  // these are the edge cases of its loop.
  constexpr auto kTrl = ImplicitPrompt::kCommonPrefix;
  EXPECT_EQ(ExtractTextPrompt("The cat sat down", "The cat slept", kTrl), 9u);  // "The cat s"
  EXPECT_EQ(ExtractTextPrompt("Hi there", "Hi you", kTrl), 2u);                 // less the space
  EXPECT_EQ(ExtractTextPrompt("abc", "xbc", kTrl), 0u);
  EXPECT_EQ(ExtractTextPrompt("abc", "abcde", kTrl), 2u);  // a prefix: one character short
  // Characters, not bytes: "é" and "à" share their first byte.
  EXPECT_EQ(ExtractTextPrompt("x \xc3\xa9t", "x \xc3\xa0", kTrl), 1u);
  EXPECT_EQ(ExtractTextPrompt("a\xc3\xa9",
                              "a\xc3\xa9"
                              "b",
                              kTrl),
            1u);  // "b" apart: \xa9b is one escape
  const std::string shared = "\n\nHuman: hi\n\nAssistant:";
  json line = {{"chosen", shared + " I think so."}, {"rejected", shared + " I don't."}};
  auto r = ParsePreferenceLine(line.dump(), "f:1", kTrl);
  EXPECT_EQ(r.prompt, shared + " I");
  EXPECT_EQ(r.chosen, " think so.");
  EXPECT_EQ(r.rejected, " don't.");
  EXPECT_EQ(ParsePreferenceLine(line.dump(), "f:1").prompt, shared);  // assistant_turn
  EXPECT_EQ(ParseImplicitPrompt("common_prefix"), kTrl);
  EXPECT_STREQ(ImplicitPromptName(ImplicitPrompt::kAssistantTurn), "assistant_turn");
  EXPECT_THROW(ParseImplicitPrompt("longest"), Error);
}

TEST(PreferenceRecordTest, ConversationalExplicitAndImplicit) {
  json user = {{"role", "user"}, {"content", "Sky?"}};
  json blue = {{"role", "assistant"}, {"content", "Blue."}};
  json green = {{"role", "assistant"}, {"content", "Green."}};
  auto r = ParsePreferenceLine(json{{"prompt", {user}}, {"chosen", {blue}}, {"rejected", {green}}}.dump(), "f:1");
  ASSERT_TRUE(r.conversational);
  ASSERT_EQ(r.prompt_messages.size(), 1u);
  EXPECT_EQ(r.prompt_messages[0].content, "Sky?");
  EXPECT_EQ(r.chosen_messages[0].content, "Blue.");
  auto implicit = ParsePreferenceLine(json{{"chosen", {user, blue}}, {"rejected", {user, green}}}.dump(), "f:1");
  EXPECT_EQ(implicit.prompt_messages, r.prompt_messages);
  EXPECT_EQ(implicit.chosen_messages, r.chosen_messages);
  EXPECT_EQ(implicit.rejected_messages, r.rejected_messages);
}

TEST(PreferenceRecordTest, EachBadInputNamesFileLineAndField) {
  std::string m;
  EXPECT_EQ(KindOf("{\"chosen\": \"a\", ", &m), RecordErrorKind::kMalformedJson);
  EXPECT_EQ(m, "f.jsonl:7: malformed JSON");
  EXPECT_EQ(KindOf("[1,2]", &m), RecordErrorKind::kMalformedJson);
  EXPECT_EQ(KindOf(R"({"prompt":"p","chosen":"a"})", &m), RecordErrorKind::kMissingField);
  EXPECT_EQ(m, "f.jsonl:7: rejected: missing");
  EXPECT_EQ(KindOf(R"({"prompt":"p","chosen":"a","rejected":3})", &m), RecordErrorKind::kWrongType);
  EXPECT_EQ(m, "f.jsonl:7: rejected: expected a string, got number");
  EXPECT_EQ(KindOf(R"({"prompt":7,"chosen":"a","rejected":"b"})", &m), RecordErrorKind::kWrongType);
  EXPECT_NE(m.find("prompt"), std::string::npos);
  EXPECT_EQ(KindOf(R"({"prompt":"p","chosen":"","rejected":"b"})", &m), RecordErrorKind::kEmptyCompletion);
  EXPECT_EQ(m, "f.jsonl:7: chosen: empty completion");
  EXPECT_EQ(KindOf(R"({"chosen":"same","rejected":"same"})", &m), RecordErrorKind::kEmptyCompletion);
  EXPECT_EQ(KindOf("{\"prompt\":\"p\xff\",\"chosen\":\"a\",\"rejected\":\"b\"}", &m), RecordErrorKind::kInvalidUtf8);
  EXPECT_EQ(m, "f.jsonl:7: invalid UTF-8 at byte 12 of the line");
  EXPECT_EQ(KindOf(R"({"prompt":[{"role":"user"}],"chosen":[],"rejected":[]})", &m), RecordErrorKind::kMissingField);
  EXPECT_EQ(m, "f.jsonl:7: prompt[0].content: missing");
  EXPECT_EQ(KindOf(R"({"chosen":[{"role":"user","content":1}],"rejected":[]})", &m), RecordErrorKind::kWrongType);
  EXPECT_EQ(KindOf(R"({"chosen":[{"role":"user","content":"a"}],"rejected":"b"})", &m), RecordErrorKind::kWrongType);
  // A lone surrogate escape is not valid text.
  EXPECT_EQ(KindOf(R"({"prompt":"\ud800","chosen":"a","rejected":"b"})", &m), RecordErrorKind::kMalformedJson);
}

TEST(PreferenceRecordTest, Utf8Validator) {
  EXPECT_EQ(FindInvalidUtf8("plain \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("ab\xc0\xaf"), 2u);        // overlong
  EXPECT_EQ(FindInvalidUtf8("\xed\xa0\x80"), 0u);      // surrogate
  EXPECT_EQ(FindInvalidUtf8("a\xe2\x82"), 1u);         // cut short
  EXPECT_EQ(FindInvalidUtf8("\xf4\x90\x80\x80"), 0u);  // past U+10FFFF
}

// The report the skip policy keeps (PrepareDataset's policies themselves: prepared_dataset_test).
TEST(DataReportTest, CountsSkippedLinesByReasonAndKeepsTheFirstMessages) {
  const char* lines[] = {"{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\"}", "not json",
                         "{\"prompt\":\"p\",\"chosen\":\"\",\"rejected\":\"b\"}",
                         "{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"d\"}", "{\"chosen\":\"c\"}"};
  DataReport report;
  for (size_t i = 0; i < std::size(lines); ++i) {
    ++report.lines;
    try {
      ParsePreferenceLine(lines[i], "f.jsonl:" + std::to_string(i + 1));
      ++report.pairs;
    } catch (const RecordError& error) {
      report.AddSkipped(error);
    }
  }
  EXPECT_EQ(report.pairs, 2u);
  EXPECT_EQ(report.skipped, 3u);
  EXPECT_EQ(report.skipped_by_reason["malformed_json"], 1u);
  EXPECT_EQ(report.skipped_by_reason["empty_completion"], 1u);
  EXPECT_EQ(report.skipped_by_reason["missing_field"], 1u);
  ASSERT_EQ(report.first_messages.size(), 3u);
  EXPECT_EQ(report.first_messages[0], "f.jsonl:2: malformed JSON");
  EXPECT_EQ(report.first_messages[2], "f.jsonl:5: rejected: missing");
  EXPECT_NE(report.Summary().find("3 skipped"), std::string::npos);
  EXPECT_EQ(ParseOnError("skip"), OnError::kSkip);
  EXPECT_THROW(ParseOnError("ignore"), Error);
}

TEST(PreferenceReaderTest, RealHhRlhfFileSplitsLikeTrlOnTheMarker) {
  const std::string path = testing::SharedDataPath("data/hh-rlhf/harmless-base-test.jsonl.gz");
  if (!testing::SharedDataPresent(path)) GTEST_SKIP() << "no " << path;
  LineReader reader(path);
  size_t lines = 0, with_marker = 0;
  for (std::string line; reader.Next(&line);) {
    if (IsBlankLine(line)) continue;
    ++lines;
    const PreferenceRecord r = ParsePreferenceLine(line, path + ":" + std::to_string(reader.line_number()));
    if (r.prompt.size() >= 11 && r.prompt.ends_with("\n\nAssistant:")) ++with_marker;
  }
  EXPECT_EQ(lines, 2312u);
  EXPECT_EQ(with_marker, lines);
}

}  // namespace
}  // namespace dpo
