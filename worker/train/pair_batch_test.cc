#include "worker/train/pair_batch.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <torch/torch.h>

#include "common/data/data_test_util.h"
#include "common/data/prepared_dataset.h"
#include "common/model/causal_lm.h"
#include "common/model/model_test_util.h"
#include "worker/train/dpo_forward.h"

namespace dpo {
namespace {

using testing::ByteTokenizer;
using testing::ScratchFile;

std::shared_ptr<CausalLM> ByteModel() {
  // ByteTokenizer's vocabulary: bytes, <s>, </s>, <pad>.
  ModelConfig c = testing::TinyConfig("llama", /*vocab_size=*/259);
  auto model = std::make_shared<CausalLM>(c, torch::TensorOptions().dtype(torch::kFloat32));
  model->InitWeights(3);
  return model;
}

// Each pair's sequences share <s> + prompt and the completions' first bytes where equal (" ", "s",
// "a"); pair 2's completions differ in length by a lot; pair 3 has a one-byte prompt.
class PairBatchTest : public ::testing::Test {
 protected:
  void Prepare(size_t max_length, TruncationMode mode) {
    data_.Write(R"({"prompt":"hello there","chosen":" yes","rejected":" no"})"
                "\n"
                R"({"prompt":"abc","chosen":"sure thing","rejected":"sorry"})"
                "\n"
                R"({"prompt":"q:","chosen":"a","rejected":"a much longer answer"})"
                "\n"
                R"({"prompt":"?","chosen":"xy","rejected":"zw"})"
                "\n");
    TokenizeOptions options;
    options.max_length = 0;
    PrepareDataset(tok_, data_.path(), out_.path(), {options});
    dataset_ = std::make_unique<PreparedDataset>(out_.path());
    collate_.max_length = max_length;
    collate_.truncation_mode = mode;
  }
  PairBatch Make(bool packed, PackedRows rows = PackedRows::kAuto) {
    return MakePairBatch(*dataset_, pairs_, collate_, c10::Device(c10::kCPU), packed, rows);
  }
  ByteTokenizer tok_;
  ScratchFile data_{"pair_batch.jsonl"}, out_{"pair_batch.bin"};
  std::unique_ptr<PreparedDataset> dataset_;
  CollateOptions collate_;
  std::vector<uint32_t> pairs_{0, 1, 2, 3};
};

TEST_F(PairBatchTest, PackedRowsComputeEachPromptOnce) {
  Prepare(0, TruncationMode::kKeepStart);
  PairBatch padded = Make(false), packed = Make(true);
  EXPECT_FALSE(padded.packed());
  ASSERT_TRUE(packed.packed());
  EXPECT_EQ(padded.real_tokens, packed.real_tokens);
  EXPECT_EQ(padded.filled_cells, padded.real_tokens);
  // Computed once per pair: the common prefix less the one token each side keeps:
  // (12 + 1) - 1, (4 + 1) - 1, (3 + 1) - 1, 2 - 1.
  EXPECT_EQ(packed.filled_cells, packed.real_tokens - (12 + 4 + 3 + 1));
  EXPECT_EQ(packed.filled_cells, packed.cells);  // one row on the CPU: no padding
  EXPECT_EQ(packed.input_ids.size(0), 1);
  EXPECT_EQ(packed.cells, packed.input_ids.numel());
  int64_t with_prefix = 0;
  for (const AttentionSpan& s : packed.spans) with_prefix += s.prefix_length > 0;
  EXPECT_EQ(with_prefix, 4);
  // The GPU's layout: rows as wide as the longest unit (pair 2: 5 + 24 - 3 tokens; units of 21,
  // 21 and 9 fill no row together), never more cells than the padded 2B x T.
  PairBatch rows = Make(true, PackedRows::kLongestUnit);
  EXPECT_EQ(rows.filled_cells, packed.filled_cells);
  EXPECT_EQ(rows.input_ids.sizes(), (std::vector<int64_t>{4, 26}));
  EXPECT_LE(rows.cells, padded.cells);
  EXPECT_LT(rows.cells - rows.filled_cells, padded.cells - padded.filled_cells);
}

// The packed layout changes no number: per-token log-probs and parameter gradients equal the
// padded layout's up to float rounding, under either truncation mode and either span kernel.
TEST_F(PairBatchTest, PackedLogpsAndGradientsEqualPadded) {
  for (auto [max_length, mode] : {std::pair<size_t, TruncationMode>{0, TruncationMode::kKeepStart},
                                  {14, TruncationMode::kKeepStart},
                                  {14, TruncationMode::kKeepEnd}}) {
    Prepare(max_length, mode);
    auto model = ByteModel();
    auto run = [&](bool packed, CausalLM::SpanAttention attention = CausalLM::SpanAttention::kAuto,
                   PackedRows rows = PackedRows::kAuto) {
      model->SetSpanAttention(attention);
      model->zero_grad();
      PairBatch batch = Make(packed, rows);
      SequenceLogps out = ForwardLogps(*model, batch, {});
      (out.token_logps * torch::arange(out.token_logps.size(0)).unsqueeze(1).add(1)).sum().backward();
      std::vector<torch::Tensor> grads;
      for (const auto& p : model->parameters()) grads.push_back(p.grad().clone());
      return std::make_pair(out, grads);
    };
    auto [padded, padded_grads] = run(false);
    auto [packed, packed_grads] = run(true);
    // The GPU's way (rows of the longest unit, one mask) gives the same numbers.
    auto [masked, masked_grads] = run(true, CausalLM::SpanAttention::kMask, PackedRows::kLongestUnit);
    const std::string where = "max_length " + std::to_string(max_length);
    EXPECT_TRUE(torch::allclose(masked.token_logps, packed.token_logps, 1e-5, 1e-5)) << where;
    EXPECT_TRUE(torch::allclose(masked_grads[0], packed_grads[0], 1e-4, 1e-6)) << where;
    ASSERT_EQ(padded.token_logps.sizes(), packed.token_logps.sizes()) << where;
    EXPECT_TRUE(torch::equal(padded.label_mask, packed.label_mask)) << where;
    EXPECT_TRUE(torch::equal(padded.completion_tokens, packed.completion_tokens)) << where;
    EXPECT_TRUE(torch::allclose(padded.token_logps, packed.token_logps, 1e-5, 1e-5)) << where;
    EXPECT_TRUE(torch::allclose(padded.token_entropy, packed.token_entropy, 1e-5, 1e-5)) << where;
    EXPECT_TRUE(torch::equal(padded.token_is_top1, packed.token_is_top1)) << where;
    for (size_t i = 0; i < padded_grads.size(); ++i) {
      EXPECT_TRUE(torch::allclose(padded_grads[i], packed_grads[i], 1e-4, 1e-6)) << where << " param " << i;
    }
  }
}

}  // namespace
}  // namespace dpo
