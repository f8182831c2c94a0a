#include "common/data/prepared_dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/data/data_test_util.h"

namespace dpo {
namespace {

using testing::ByteTokenizer;
using testing::Ids;
using testing::ScratchFile;

std::string Lines(size_t n) {
  std::string text;
  for (size_t i = 0; i < n; ++i) {
    text +=
        nlohmann::json{
            {"prompt", "p" + std::to_string(i)}, {"chosen", " c" + std::string(i % 7, 'x')}, {"rejected", " r"}}
            .dump() +
        "\n";
  }
  return text;
}

TEST(PreparedDatasetTest, RoundTripInLineOrderOnManyThreadsAndReuse) {
  ScratchFile data("prep.jsonl.gz"), out("prep.bin");
  data.WriteGzip(Lines(1000));
  ByteTokenizer tok;
  PrepareOptions options;
  options.num_threads = 4;
  options.chunk_lines = 7;  // many chunks per round, a partial last one
  auto result = PrepareDataset(tok, data.path(), out.path(), options);
  EXPECT_FALSE(result.reused);
  EXPECT_EQ(result.report.pairs, 1000u);
  PreparedDataset ds(out.path());
  ASSERT_EQ(ds.size(), 1000u);
  for (size_t i : {0, 1, 517, 999}) {
    auto p = ds.pair(i);
    std::vector<TokenId> prompt(p.prompt.begin(), p.prompt.end());
    std::vector<TokenId> chosen(p.chosen.begin(), p.chosen.end());
    std::vector<TokenId> expected_prompt = Ids("p" + std::to_string(i));
    expected_prompt.insert(expected_prompt.begin(), ByteTokenizer::kBos);
    EXPECT_EQ(prompt, expected_prompt);
    EXPECT_EQ(chosen.size(), 3 + i % 7);
    EXPECT_EQ(chosen.back(), ByteTokenizer::kEos);
    EXPECT_EQ(ds.max_sequence_length(i), prompt.size() + chosen.size());
  }
  EXPECT_EQ(ds.tokenizer_hash(), tok.content_hash());
  auto meta = nlohmann::json::parse(ds.metadata_json());
  EXPECT_EQ(meta["options"]["max_length"], 1024);
  EXPECT_EQ(meta["report"]["pairs"], 1000);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(tok.content_hash()));
  EXPECT_EQ(meta["tokenizer_hash"], hex);

  // Same inputs: reused, file untouched. Changed option or tokenizer: prepared again.
  auto stamp = std::filesystem::last_write_time(out.path());
  auto again = PrepareDataset(tok, data.path(), out.path(), options);
  EXPECT_TRUE(again.reused);
  EXPECT_EQ(again.report.pairs, 1000u);
  EXPECT_EQ(std::filesystem::last_write_time(out.path()), stamp);
  options.tokenize.max_length = 4;
  auto changed = PrepareDataset(tok, data.path(), out.path(), options);
  EXPECT_FALSE(changed.reused);
  EXPECT_EQ(changed.report.dropped, 990u);  // prompts "<s>pNN.." of 4+ tokens cannot fit
  EXPECT_EQ(PreparedDataset(out.path()).size(), 10u);
  ByteTokenizer other("[INST]");
  EXPECT_FALSE(PrepareDataset(other, data.path(), out.path(), options).reused);
  // No temp file is left behind.
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::temp_directory_path())) {
    EXPECT_EQ(entry.path().string().find(out.path() + ".tmp"), std::string::npos);
  }
}

TEST(PreparedDatasetTest, SkipPolicyIsRecordedAndFailPolicyNamesTheLine) {
  ScratchFile data("bad.jsonl"), out("bad.bin");
  data.Write(Lines(3) + "{oops\n" + Lines(2) + "{\"prompt\":\"p\",\"chosen\":\"x\",\"rejected\":[]}\n");
  ByteTokenizer tok;
  PrepareOptions options;
  try {
    PrepareDataset(tok, data.path(), out.path(), options);
    FAIL() << "expected an error";
  } catch (const RecordError& e) {
    EXPECT_EQ(std::string(e.what()), data.path() + ":4: malformed JSON");
  }
  EXPECT_FALSE(std::filesystem::exists(out.path()));
  options.on_error = OnError::kSkip;
  auto result = PrepareDataset(tok, data.path(), out.path(), options);
  EXPECT_EQ(result.report.pairs, 5u);
  EXPECT_EQ(result.report.skipped, 2u);
  auto meta = nlohmann::json::parse(PreparedDataset(out.path()).metadata_json());
  EXPECT_EQ(meta["report"]["skipped_by_reason"]["wrong_type"], 1);
  EXPECT_EQ(meta["on_error"], "skip");
  EXPECT_THROW(PrepareDataset(tok, "/nonexistent/x.jsonl", out.path(), options), Error);
}

TEST(PreparedDatasetTest, EachPairRecordsTheInputLineItCameFrom) {
  // Line 2 is blank, line 4 malformed (skipped), line 6 too long for max_length (dropped).
  ScratchFile data("lines.jsonl"), out("lines.bin");
  const std::string too_long =
      nlohmann::json{{"prompt", std::string(40, 'q')}, {"chosen", " c"}, {"rejected", " r"}}.dump() + "\n";
  data.Write(Lines(1) + "\n" + Lines(1) + "{oops\n" + Lines(1) + too_long + Lines(2));
  ByteTokenizer tok;
  PrepareOptions options;
  options.on_error = OnError::kSkip;
  options.tokenize.max_length = 16;
  options.num_threads = 2;
  options.chunk_lines = 2;  // lines cross chunk and round boundaries
  auto result = PrepareDataset(tok, data.path(), out.path(), options);
  EXPECT_EQ(result.report.skipped, 1u);
  EXPECT_EQ(result.report.dropped, 1u);
  PreparedDataset ds(out.path());
  ASSERT_EQ(ds.size(), 5u);
  std::vector<size_t> lines;
  for (size_t i = 0; i < ds.size(); ++i) lines.push_back(ds.source_line(i));
  EXPECT_EQ(lines, (std::vector<size_t>{1, 3, 5, 7, 8}));
}

TEST(PreparedDatasetTest, TruncatedGzipFailsEvenUnderSkip) {
  ScratchFile data("trunc.jsonl.gz"), out("trunc.bin");
  data.WriteGzip(Lines(20000));
  std::filesystem::resize_file(data.path(), std::filesystem::file_size(data.path()) * 2 / 3);
  ByteTokenizer tok;
  PrepareOptions options;
  options.on_error = OnError::kSkip;
  options.num_threads = 3;
  options.chunk_lines = 100;
  try {
    PrepareDataset(tok, data.path(), out.path(), options);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(out.path()));
}

TEST(PreparedDatasetTest, RejectsCorruptFiles) {
  ScratchFile junk("junk.bin");
  junk.Write("not a prepared dataset at all, but long enough to hold a header ..........................");
  EXPECT_THROW(PreparedDataset{junk.path()}, Error);
  ScratchFile data("ok.jsonl"), out("ok.bin");
  data.Write(Lines(5));
  ByteTokenizer tok;
  PrepareDataset(tok, data.path(), out.path(), {});
  std::filesystem::resize_file(out.path(), std::filesystem::file_size(out.path()) - 4);
  try {
    PreparedDataset ds(out.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt"), std::string::npos) << e.what();
  }
}

TEST(PreparedDatasetTest, VersionOneFileIsRefusedByNameAndPreparedAgain) {
  // Version 1 had no source lines: reading one fails naming both versions, and preparing over
  // it writes version 2 instead of reusing it.
  ScratchFile data("v1.jsonl"), out("v1.bin");
  data.Write(Lines(3));
  ByteTokenizer tok;
  PrepareDataset(tok, data.path(), out.path(), {});
  {
    std::FILE* f = std::fopen(out.path().c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    const uint32_t old_version = 1;
    std::fseek(f, 8, SEEK_SET);  // after the magic
    std::fwrite(&old_version, sizeof old_version, 1, f);
    std::fclose(f);
  }
  try {
    PreparedDataset ds(out.path());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("version 1, expected 2"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(PrepareDataset(tok, data.path(), out.path(), {}).reused);
  EXPECT_EQ(PreparedDataset(out.path()).source_line(2), 3u);
}

}  // namespace
}  // namespace dpo
