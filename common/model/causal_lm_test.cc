#include "common/model/causal_lm.h"

#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/model/model_test_util.h"
#include "common/model/pretrained.h"
#include "common/util/error.h"

namespace dpo {
namespace {

using testing::TinyConfig;

TEST(CausalLMTest, ParameterNamesMatchTransformers) {
  auto model = RandomInit(TinyConfig("qwen3"), 1);
  std::set<std::string> names;
  int64_t total = 0;
  for (const auto& p : model->named_parameters()) {
    names.insert(p.key());
    total += p.value().numel();
  }
  for (const char* expected :
       {"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_norm.weight", "model.layers.0.self_attn.o_proj.weight",
        "model.layers.1.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight"}) {
    EXPECT_TRUE(names.count(expected)) << expected;
  }
  EXPECT_FALSE(names.count("lm_head.weight"));  // tied
  EXPECT_FALSE(names.count("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_EQ(total, model->config().NumParameters());
  EXPECT_TRUE(
      model->lm_head_weight().is_same(model->named_parameters()["model.embed_tokens.weight"]));

  auto qwen2 = RandomInit(TinyConfig("qwen2"), 1);
  auto params = qwen2->named_parameters();
  ASSERT_NE(params.find("model.layers.0.self_attn.v_proj.bias"), nullptr);
  EXPECT_EQ(params.find("model.layers.0.self_attn.o_proj.bias"), nullptr);
  ASSERT_NE(params.find("lm_head.weight"), nullptr);
  EXPECT_EQ(params["model.layers.0.self_attn.v_proj.bias"].abs().sum().item<float>(), 0.f);
  EXPECT_EQ(params["model.norm.weight"].min().item<float>(), 1.f);
}

TEST(CausalLMTest, InitIsSeededAndHfLike) {
  auto a = RandomInit(TinyConfig("llama"), 5);
  auto b = RandomInit(TinyConfig("llama"), 5);
  auto c = RandomInit(TinyConfig("llama"), 6);
  torch::Tensor wa = a->named_parameters()["model.layers.0.mlp.up_proj.weight"];
  EXPECT_TRUE(torch::equal(wa, b->named_parameters()["model.layers.0.mlp.up_proj.weight"]));
  EXPECT_FALSE(torch::equal(wa, c->named_parameters()["model.layers.0.mlp.up_proj.weight"]));
  EXPECT_NEAR(wa.std().item<double>(), 0.02, 0.003);
}

TEST(CausalLMTest, LogitsShapesAndPositions) {
  auto model = RandomInit(TinyConfig("llama"), 3);
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::randint(97, {2, 7}, torch::kInt64);
  torch::Tensor hidden = model->Hidden(ids);
  EXPECT_EQ(hidden.sizes(), (std::vector<int64_t>{2, 7, 32}));
  torch::Tensor logits = model->Logits(ids);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 7, 97}));
  EXPECT_TRUE(torch::allclose(logits, torch::linear(hidden, model->lm_head_weight())));
  torch::Tensor pos = torch::arange(7, torch::kInt64).unsqueeze(0).expand({2, 7});
  EXPECT_TRUE(torch::allclose(model->Logits(ids, pos), logits, 1e-5, 1e-6));
  // Non-uniform positions change the result (RoPE is relative, so a constant shift would not).
  EXPECT_FALSE(torch::allclose(model->Logits(ids, pos * 2), logits, 1e-5, 1e-6));
  // Right padding does not change the real tokens' logits.
  torch::Tensor padded = torch::cat({ids, torch::zeros({2, 3}, torch::kInt64)}, 1);
  EXPECT_TRUE(torch::allclose(model->Logits(padded).narrow(1, 0, 7), logits, 1e-5, 1e-6));
  EXPECT_THROW(model->Hidden(ids.to(torch::kInt32)), Error);
}

TEST(CausalLMTest, PackedSpansEqualSeparateSequences) {
  // Two sequences packed in one row (one span each, positions restarting at 0) give the hidden
  // states each gives alone: no attention crosses the span boundary.
  auto model = RandomInit(TinyConfig("qwen3"), 4);
  torch::manual_seed(0);
  torch::Tensor a = torch::randint(0, 97, {1, 5}, torch::kInt64);
  torch::Tensor b = torch::randint(0, 97, {1, 3}, torch::kInt64);
  torch::Tensor packed = torch::cat({a, b}, 1);
  torch::Tensor positions = torch::tensor({0, 1, 2, 3, 4, 0, 1, 2}, torch::kInt64).unsqueeze(0);
  torch::Tensor together = model->Hidden(packed, positions, {{0, 0, 5}, {0, 5, 3}});
  EXPECT_TRUE(torch::allclose(together.narrow(1, 0, 5), model->Hidden(a), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(together.narrow(1, 5, 3), model->Hidden(b), 1e-5, 1e-5));
  // Without the spans, b's tokens would see a's: different states.
  EXPECT_FALSE(torch::allclose(model->Hidden(packed, positions).narrow(1, 5, 3), model->Hidden(b),
                               1e-3, 1e-3));
}

TEST(CausalLMTest, SpanWithSharedPrefixEqualsWholeSequence) {
  // Row: [prompt p | tail x] [tail y] [padding], y attending to p as its prefix. x's and y's states
  // equal those of the whole sequences p+x and p+y, and the padding tail touches neither.
  for (const std::string type : {"llama", "qwen3"}) {
    auto model = RandomInit(TinyConfig(type), 5);
    torch::manual_seed(1);
    torch::Tensor p = torch::randint(0, 97, {1, 4}, torch::kInt64);
    torch::Tensor x = torch::randint(0, 97, {1, 3}, torch::kInt64);
    torch::Tensor y = torch::randint(0, 97, {1, 2}, torch::kInt64);
    torch::Tensor row = torch::cat({p, x, y, torch::zeros({1, 2}, torch::kInt64)}, 1);
    torch::Tensor positions =
        torch::tensor({0, 1, 2, 3, 4, 5, 6, 4, 5, 0, 1}, torch::kInt64).unsqueeze(0);
    torch::Tensor together =
        model->Hidden(row, positions, {{0, 0, 7}, {0, 7, 2, /*prefix_offset=*/0, /*prefix_length=*/4}, {0, 9, 2}});
    torch::Tensor px = model->Hidden(torch::cat({p, x}, 1));
    torch::Tensor py = model->Hidden(torch::cat({p, y}, 1));
    EXPECT_TRUE(torch::allclose(together.narrow(1, 0, 7), px, 1e-5, 1e-5)) << type;
    EXPECT_TRUE(torch::allclose(together.narrow(1, 7, 2), py.narrow(1, 4, 2), 1e-5, 1e-5)) << type;
    // The one-mask kernel (what CUDA runs) gives the same states, padding tail included.
    model->SetSpanAttention(CausalLM::SpanAttention::kMask);
    EXPECT_TRUE(torch::allclose(model->Hidden(row, positions, {{0, 0, 7}, {0, 7, 2, 0, 4}, {0, 9, 2}}),
                                together, 1e-5, 1e-5))
        << type;
    model->SetSpanAttention(CausalLM::SpanAttention::kAuto);
    // Gradients flow into the shared prompt from both tails.
    model->zero_grad();
    model->Hidden(row, positions, {{0, 0, 7}, {0, 7, 2, 0, 4}, {0, 9, 2}}).narrow(1, 7, 2).sum().backward();
    torch::Tensor shared_grad = model->named_parameters()["model.embed_tokens.weight"].grad().clone();
    model->zero_grad();
    model->Hidden(torch::cat({p, y}, 1)).narrow(1, 4, 2).sum().backward();
    EXPECT_TRUE(torch::allclose(shared_grad, model->named_parameters()["model.embed_tokens.weight"].grad(),
                                1e-4, 1e-6))
        << type;
  }
}

TEST(CausalLMTest, SpansMustTileEveryRow) {
  auto model = RandomInit(TinyConfig("llama"), 6);
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::zeros({1, 6}, torch::kInt64);
  EXPECT_NO_THROW(model->Hidden(ids, {}, {{0, 0, 4}, {0, 4, 2, 0, 2}}));
  EXPECT_THROW(model->Hidden(ids, {}, {{0, 0, 4}}), Error);                // row not covered
  EXPECT_THROW(model->Hidden(ids, {}, {{0, 0, 4}, {0, 3, 3}}), Error);     // overlap
  EXPECT_THROW(model->Hidden(ids, {}, {{0, 0, 4}, {0, 4, 2, 3, 2}}), Error);  // prefix past start
  EXPECT_THROW(model->Hidden(ids, {}, {{1, 0, 6}}), Error);                // no such row
}

TEST(CausalLMTest, SlidingWindowIsEnforced) {
  ModelConfig c = TinyConfig("mistral");
  c.sliding_window = 4;
  auto model = RandomInit(c, 1);
  torch::NoGradGuard no_grad;
  EXPECT_NO_THROW(model->Hidden(torch::zeros({1, 4}, torch::kInt64)));
  EXPECT_THROW(model->Hidden(torch::zeros({1, 5}, torch::kInt64)), Error);
}

TEST(CausalLMTest, ActivationCheckpointingGivesSameGradients) {
  for (const std::string type : {"llama", "qwen3"}) {
    auto model = RandomInit(TinyConfig(type), 11);
    torch::Tensor ids = torch::randint(97, {2, 6}, torch::kInt64);
    auto grads = [&](bool checkpointing) {
      model->zero_grad();
      model->SetActivationCheckpointing(checkpointing);
      torch::Tensor loss = torch::log_softmax(model->Logits(ids), -1).select(-1, 5).sum();
      loss.backward();
      std::vector<torch::Tensor> out;
      for (const auto& p : model->parameters()) out.push_back(p.grad().clone());
      return std::make_pair(loss.item<double>(), out);
    };
    auto [plain_loss, plain] = grads(false);
    auto [ckpt_loss, ckpt] = grads(true);
    EXPECT_DOUBLE_EQ(plain_loss, ckpt_loss);
    ASSERT_EQ(plain.size(), ckpt.size());
    for (size_t i = 0; i < plain.size(); ++i) {
      EXPECT_GT(plain[i].abs().max().item<double>(), 0.0) << type << " param " << i;
      EXPECT_TRUE(torch::allclose(plain[i], ckpt[i], 1e-5, 1e-7)) << type << " param " << i;
    }
  }
}

TEST(CausalLMTest, CheckpointingWithFrozenParameters) {
  auto model = RandomInit(TinyConfig("llama"), 2);
  model->SetActivationCheckpointing(true);
  for (auto& p : model->parameters()) p.requires_grad_(false);
  torch::Tensor norm = model->named_parameters()["model.norm.weight"];
  norm.requires_grad_(true);
  model->Logits(torch::randint(97, {1, 5}, torch::kInt64)).sum().backward();
  EXPECT_TRUE(norm.grad().defined());
  EXPECT_FALSE(model->named_parameters()["model.layers.0.mlp.up_proj.weight"].grad().defined());
}

}  // namespace
}  // namespace dpo
