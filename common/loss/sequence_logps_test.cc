#include "common/loss/sequence_logps.h"

#include <gtest/gtest.h>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include "common/util/error.h"

namespace dpo {
namespace {

struct Batch {
  at::Tensor hidden, weight, input_ids, completion_mask;
};

// Rows with different prompt lengths, right padding, and one row without completion tokens.
Batch MakeBatch(int64_t vocab, int64_t hidden_size, at::ScalarType dtype) {
  torch::manual_seed(7);
  const int64_t batch = 4, time = 11;
  Batch b;
  b.hidden = torch::randn({batch, time, hidden_size}).to(dtype).requires_grad_();
  b.weight = (torch::randn({vocab, hidden_size}) * 0.5).to(dtype).requires_grad_();
  b.input_ids = torch::randint(0, vocab, {batch, time}, torch::kLong);
  b.completion_mask = torch::zeros({batch, time}, torch::kLong);
  b.completion_mask[0].slice(0, 3, 11).fill_(1);  // prompt 3, no padding
  b.completion_mask[1].slice(0, 1, 6).fill_(1);   // prompt 1, padding from 6
  b.completion_mask[2].slice(0, 5, 9).fill_(1);   // prompt 5, padding from 9
  return b;                                       // row 3: no completion at all
}

void ExpectClose(const at::Tensor& a, const at::Tensor& b, double tol, const char* what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double diff = (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
  const double scale = std::max(1.0, b.to(torch::kDouble).abs().max().item<double>());
  EXPECT_LE(diff, tol * scale) << what;
}

// Forward values and the grads of Σ seed·logps agree with the full-logits reference. The chunk
// size (5) leaves a partial last chunk; tolerance 2e-5 relative (fp32 sums in another order).
TEST(SequenceLogps, ChunkedMatchesReferenceFp32) {
  Batch b = MakeBatch(/*vocab=*/97, /*hidden_size=*/16, torch::kFloat);
  const at::Tensor seed = torch::randn({4, 10});
  SequenceLogps chunked = ComputeSequenceLogps(b.hidden, b.weight, b.input_ids, b.completion_mask, {.chunk_tokens = 5});
  (chunked.token_logps * seed).sum().backward();
  const at::Tensor gh = b.hidden.grad().clone(), gw = b.weight.grad().clone();
  b.hidden.mutable_grad().zero_();
  b.weight.mutable_grad().zero_();
  SequenceLogps ref = ComputeSequenceLogpsReference(b.hidden, b.weight, b.input_ids, b.completion_mask);
  (ref.token_logps * seed).sum().backward();

  ExpectClose(chunked.token_logps, ref.token_logps, 2e-5, "logps");
  ExpectClose(chunked.token_entropy, ref.token_entropy, 2e-5, "entropy");
  ExpectClose(chunked.token_log_sum_sq_probs, ref.token_log_sum_sq_probs, 2e-5, "log_sum_sq");
  ExpectClose(chunked.token_mean_logits, ref.token_mean_logits, 2e-5, "mean_logits");
  EXPECT_TRUE(chunked.token_is_top1.equal(ref.token_is_top1));
  EXPECT_TRUE(chunked.label_mask.equal(ref.label_mask));
  ExpectClose(gh, b.hidden.grad(), 2e-5, "grad hidden");
  ExpectClose(gw, b.weight.grad(), 2e-5, "grad weight");

  // Masked positions contribute nothing: zero outputs, and the last position's hidden (it
  // predicts nothing) and the whole of row 3 get no gradient.
  EXPECT_EQ(chunked.token_logps.masked_select(~chunked.label_mask).abs().sum().item<float>(), 0);
  EXPECT_EQ(gh.select(1, 10).abs().sum().item<float>(), 0);
  EXPECT_EQ(gh[3].abs().sum().item<float>(), 0);
  EXPECT_GT(gh[0].abs().sum().item<float>(), 0);
  EXPECT_TRUE(chunked.completion_tokens.equal(torch::tensor({8.f, 5.f, 4.f, 0.f})));
  // Log-probs are log-probabilities: strictly negative where scored.
  EXPECT_TRUE(chunked.token_logps.masked_select(chunked.label_mask).lt(0).all().item<bool>());
}

// bf16 inputs are upcast: the logits are fp32 and the grads come back in bf16.
TEST(SequenceLogps, Bf16InputsComputeInFp32) {
  Batch b = MakeBatch(/*vocab=*/64, /*hidden_size=*/8, torch::kBFloat16);
  SequenceLogps chunked = ComputeSequenceLogps(b.hidden, b.weight, b.input_ids, b.completion_mask, {.chunk_tokens = 3});
  chunked.token_logps.sum().backward();
  EXPECT_EQ(chunked.token_logps.scalar_type(), torch::kFloat);
  EXPECT_EQ(b.hidden.grad().scalar_type(), torch::kBFloat16);
  EXPECT_EQ(b.weight.grad().scalar_type(), torch::kBFloat16);
  const at::Tensor h = b.hidden.detach().to(torch::kFloat).requires_grad_();
  const at::Tensor w = b.weight.detach().to(torch::kFloat).requires_grad_();
  SequenceLogps ref = ComputeSequenceLogpsReference(h, w, b.input_ids, b.completion_mask);
  ref.token_logps.sum().backward();
  ExpectClose(chunked.token_logps, ref.token_logps, 2e-5, "logps");
  ExpectClose(b.weight.grad(), w.grad(), 1e-2, "grad weight (bf16 rounding)");
}

// bf16 GEMMs (what CUDA runs under autocast): fp32 outputs and gradients within bf16 rounding
// of the fp32 reference (logits rounded to 8 bits of mantissa: ~1e-2 relative).
TEST(SequenceLogps, Bf16GemmsStayWithinBf16RoundingOfFp32) {
  Batch b = MakeBatch(/*vocab=*/97, /*hidden_size=*/16, torch::kFloat);
  SequenceLogps bf16 = ComputeSequenceLogps(b.hidden, b.weight, b.input_ids, b.completion_mask,
                                            {.chunk_tokens = 5, .gemm_dtype = torch::kBFloat16});
  bf16.token_logps.sum().backward();
  const at::Tensor gh = b.hidden.grad().clone(), gw = b.weight.grad().clone();
  b.hidden.mutable_grad().zero_();
  b.weight.mutable_grad().zero_();
  SequenceLogps ref = ComputeSequenceLogpsReference(b.hidden, b.weight, b.input_ids, b.completion_mask);
  ref.token_logps.sum().backward();
  EXPECT_EQ(bf16.token_logps.scalar_type(), torch::kFloat);
  EXPECT_EQ(gw.scalar_type(), torch::kFloat);
  ExpectClose(bf16.token_logps, ref.token_logps, 2e-2, "logps");
  ExpectClose(gh, b.hidden.grad(), 2e-2, "grad hidden");
  ExpectClose(gw, b.weight.grad(), 2e-2, "grad weight");
  EXPECT_FALSE(bf16.token_logps.equal(ref.token_logps));  // the GEMMs really ran in bf16
}

// Under autocast the GEMMs take autocast's dtype by default, and nothing else changes: the same
// numbers as asking for bf16 explicitly, still fp32 out.
TEST(SequenceLogps, AutocastSelectsItsDtypeForTheGemms) {
  Batch b = MakeBatch(/*vocab=*/97, /*hidden_size=*/16, torch::kFloat);
  SequenceLogps explicit_bf16 = ComputeSequenceLogps(b.hidden, b.weight, b.input_ids, b.completion_mask,
                                                     {.chunk_tokens = 5, .gemm_dtype = torch::kBFloat16});
  at::autocast::set_autocast_enabled(at::kCPU, true);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  SequenceLogps autocast =
      ComputeSequenceLogps(b.hidden, b.weight, b.input_ids, b.completion_mask, {.chunk_tokens = 5});
  at::autocast::set_autocast_enabled(at::kCPU, false);
  at::autocast::clear_cache();
  EXPECT_EQ(autocast.token_logps.scalar_type(), torch::kFloat);
  EXPECT_TRUE(autocast.token_logps.equal(explicit_bf16.token_logps));
  EXPECT_TRUE(autocast.token_entropy.equal(explicit_bf16.token_entropy));
}

// A batch without completion tokens still yields a differentiable zero (nothing to score).
TEST(SequenceLogps, AllMaskedBatchGivesZeros) {
  Batch b = MakeBatch(/*vocab=*/16, /*hidden_size=*/4, torch::kFloat);
  const at::Tensor none = torch::zeros_like(b.completion_mask);
  SequenceLogps s = ComputeSequenceLogps(b.hidden, b.weight, b.input_ids, none);
  s.token_logps.sum().backward();
  EXPECT_EQ(s.token_logps.abs().sum().item<float>(), 0);
  EXPECT_EQ(b.hidden.grad().abs().sum().item<float>(), 0);
  EXPECT_FALSE(s.label_mask.any().item<bool>());
}

TEST(SequenceLogps, RejectsBadInputs) {
  Batch b = MakeBatch(/*vocab=*/20, /*hidden_size=*/4, torch::kFloat);
  at::Tensor ids = b.input_ids.clone();
  ids[0][5] = 20;  // a completion label outside the vocabulary
  EXPECT_THROW(ComputeSequenceLogps(b.hidden, b.weight, ids, b.completion_mask), Error);
  ids[0][5] = 3;
  ids[3][5] = 1000;  // outside the vocabulary but masked: ignored
  EXPECT_NO_THROW(ComputeSequenceLogps(b.hidden, b.weight, ids, b.completion_mask));
  EXPECT_THROW(ComputeSequenceLogps(b.hidden, b.weight.slice(1, 0, 3), b.input_ids, b.completion_mask), Error);
  EXPECT_THROW(ComputeSequenceLogps(b.hidden, b.weight, b.input_ids.slice(1, 1), b.completion_mask), Error);
  EXPECT_THROW(ComputeSequenceLogps(b.hidden, b.weight, b.input_ids, b.completion_mask, {.chunk_tokens = 0}), Error);
}

}  // namespace
}  // namespace dpo
