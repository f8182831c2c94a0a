#include "common/data/batch.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/data/data_test_util.h"

namespace dpo {
namespace {

using testing::ByteTokenizer;
using testing::ScratchFile;
// One-letter names keep the expected token rows below aligned.
constexpr int64_t B = ByteTokenizer::kBos, E = ByteTokenizer::kEos, P = 0;  // NOLINT(readability-identifier-naming)

// Pair 0: <s>ab | c</s> | </s>-only is impossible (completions are non-empty), so "d"</s>.
// Pair 1: <s>x | yz</s> | w</s>.
class BatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_.Write(R"({"prompt":"ab","chosen":"c","rejected":"d"})"
                "\n"
                R"({"prompt":"x","chosen":"yz","rejected":"w"})"
                "\n");
    TokenizeOptions no_limit;
    no_limit.max_length = 0;
    PrepareDataset(tok_, data_.path(), out_.path(), {no_limit});
    ds_ = std::make_unique<PreparedDataset>(out_.path());
  }
  ByteTokenizer tok_;
  ScratchFile data_{"batch.jsonl"}, out_{"batch.bin"};
  std::unique_ptr<PreparedDataset> ds_;
  std::vector<uint32_t> pairs_{0, 1};
};

TEST_F(BatchTest, PaddedChosenRowsThenRejectedLikeTrlCollator) {
  CollateOptions o;
  auto b = CollatePadded(*ds_, pairs_, o);
  ASSERT_EQ(b.rows, 4u);
  ASSERT_EQ(b.width, 5u);
  std::vector<int64_t> ids = {B, 'a', 'b', 'c', E, B, 'x', 'y', 'z', E, B, 'a', 'b', 'd', E, B, 'x', 'w', E, P};
  std::vector<uint8_t> mask = {0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0};
  EXPECT_EQ(b.input_ids, ids);
  EXPECT_EQ(b.completion_mask, mask);
  EXPECT_EQ(b.lengths, (std::vector<int32_t>{5, 5, 5, 4}));
  EXPECT_DOUBLE_EQ(b.padding_fraction(), 1.0 / 20);
  o.pad_to_multiple_of = 8;
  o.pad_id = 258;
  auto wide = CollatePadded(*ds_, pairs_, o);
  EXPECT_EQ(wide.width, 8u);
  EXPECT_EQ(wide.input_ids[7], 258);
}

TEST_F(BatchTest, MaxLengthKeepsStartOrEnd) {
  CollateOptions o;
  o.max_length = 3;
  auto start = CollatePadded(*ds_, pairs_, o);
  EXPECT_EQ(start.width, 3u);
  EXPECT_EQ(std::vector<int64_t>(start.input_ids.begin(), start.input_ids.begin() + 6),
            (std::vector<int64_t>{B, 'a', 'b', B, 'x', 'y'}));
  o.truncation_mode = TruncationMode::kKeepEnd;
  auto end = CollatePadded(*ds_, pairs_, o);
  EXPECT_EQ(std::vector<int64_t>(end.input_ids.begin(), end.input_ids.begin() + 6),
            (std::vector<int64_t>{'b', 'c', E, 'y', 'z', E}));
  EXPECT_EQ(std::vector<uint8_t>(end.completion_mask.begin(), end.completion_mask.begin() + 3),
            (std::vector<uint8_t>{0, 1, 1}));
}

}  // namespace
}  // namespace dpo

namespace dpo {
namespace {

// End to end with a real tokenizer: the completion-masked tokens of each row decode to that
// side's reply plus EOS, and unmasked ones to the prompt.
TEST(BatchRealTokenizerTest, CompletionMaskCoversExactlyTheReplies) {
  const std::string dir = testing::SharedDataPath("tokenizers/qwen3");
  if (!testing::SharedDataPresent(dir)) GTEST_SKIP() << "no " << dir;
  auto tokenizer = Tokenizer::Load(dir);
  ScratchFile data("real.jsonl"), out("real.bin");
  data.Write(
      R"({"chosen":"\n\nHuman: Name a colour.\n\nAssistant: Blue, like the sky.","rejected":"\n\nHuman: Name a colour.\n\nAssistant: No."})"
      "\n");
  PrepareDataset(*tokenizer, data.path(), out.path(), {});
  PreparedDataset ds(out.path());
  ASSERT_EQ(ds.size(), 1u);
  std::vector<uint32_t> pairs = {0};
  CollateOptions o;
  o.pad_id = *tokenizer->pad_id();
  auto b = CollatePadded(ds, pairs, o);
  const char* replies[] = {" Blue, like the sky.<|im_end|>", " No.<|im_end|>"};
  for (size_t row = 0; row < 2; ++row) {
    std::vector<TokenId> prompt, completion;
    for (size_t i = 0; i < static_cast<size_t>(b.lengths[row]); ++i) {
      auto id = static_cast<TokenId>(b.input_ids[row * b.width + i]);
      (b.completion_mask[row * b.width + i] ? completion : prompt).push_back(id);
    }
    EXPECT_EQ(tokenizer->Decode(prompt, false), "\n\nHuman: Name a colour.\n\nAssistant:");
    EXPECT_EQ(tokenizer->Decode(completion, false), replies[row]);
  }
}

}  // namespace
}  // namespace dpo
