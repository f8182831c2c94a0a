#include "common/model/causal_lm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

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
  EXPECT_TRUE(model->lm_head_weight().is_same(model->named_parameters()["model.embed_tokens.weight"]));

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
  EXPECT_FALSE(torch::allclose(model->Hidden(packed, positions).narrow(1, 5, 3), model->Hidden(b), 1e-3, 1e-3));
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
    torch::Tensor positions = torch::tensor({0, 1, 2, 3, 4, 5, 6, 4, 5, 0, 1}, torch::kInt64).unsqueeze(0);
    torch::Tensor together =
        model->Hidden(row, positions, {{0, 0, 7}, {0, 7, 2, /*prefix_offset=*/0, /*prefix_length=*/4}, {0, 9, 2}});
    torch::Tensor px = model->Hidden(torch::cat({p, x}, 1));
    torch::Tensor py = model->Hidden(torch::cat({p, y}, 1));
    EXPECT_TRUE(torch::allclose(together.narrow(1, 0, 7), px, 1e-5, 1e-5)) << type;
    EXPECT_TRUE(torch::allclose(together.narrow(1, 7, 2), py.narrow(1, 4, 2), 1e-5, 1e-5)) << type;
    // The one-mask kernel (what CUDA runs) gives the same states, padding tail included.
    model->SetSpanAttention(CausalLM::SpanAttention::kMask);
    EXPECT_TRUE(
        torch::allclose(model->Hidden(row, positions, {{0, 0, 7}, {0, 7, 2, 0, 4}, {0, 9, 2}}), together, 1e-5, 1e-5))
        << type;
    model->SetSpanAttention(CausalLM::SpanAttention::kAuto);
    // Gradients flow into the shared prompt from both tails.
    model->zero_grad();
    model->Hidden(row, positions, {{0, 0, 7}, {0, 7, 2, 0, 4}, {0, 9, 2}}).narrow(1, 7, 2).sum().backward();
    torch::Tensor shared_grad = model->named_parameters()["model.embed_tokens.weight"].grad().clone();
    model->zero_grad();
    model->Hidden(torch::cat({p, y}, 1)).narrow(1, 4, 2).sum().backward();
    EXPECT_TRUE(torch::allclose(shared_grad, model->named_parameters()["model.embed_tokens.weight"].grad(), 1e-4, 1e-6))
        << type;
  }
}

TEST(CausalLMTest, SpansMustTileEveryRow) {
  auto model = RandomInit(TinyConfig("llama"), 6);
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::zeros({1, 6}, torch::kInt64);
  EXPECT_NO_THROW(model->Hidden(ids, {}, {{0, 0, 4}, {0, 4, 2, 0, 2}}));
  EXPECT_THROW(model->Hidden(ids, {}, {{0, 0, 4}}), Error);                   // row not covered
  EXPECT_THROW(model->Hidden(ids, {}, {{0, 0, 4}, {0, 3, 3}}), Error);        // overlap
  EXPECT_THROW(model->Hidden(ids, {}, {{0, 0, 4}, {0, 4, 2, 3, 2}}), Error);  // prefix past start
  EXPECT_THROW(model->Hidden(ids, {}, {{1, 0, 6}}), Error);                   // no such row
}

// A tiny config of `type` with a sliding window on layers [max_window_layers, layers).
ModelConfig WindowConfig(const std::string& type, int64_t window, int64_t layers, int64_t max_window_layers = 0) {
  ModelConfig c = TinyConfig(type);
  c.num_hidden_layers = layers;
  c.sliding_window = window;
  c.max_window_layers = max_window_layers;
  return c;
}

TEST(CausalLMTest, SlidingWindowSeesItselfAndWindowMinusOneBefore) {
  // One layer, window 4: token i's state is that of tokens i-3..i alone at the same positions
  // (transformers' kv_idx > q_idx - window). Window 5 or none would let i see i-4.
  auto model = RandomInit(WindowConfig("mistral", 4, /*layers=*/1), 3);
  torch::NoGradGuard no_grad;
  torch::manual_seed(2);
  const int64_t t = 11, window = 4;
  torch::Tensor ids = torch::randint(0, 97, {1, t}, torch::kInt64);
  torch::Tensor pos = torch::arange(t, torch::kInt64).unsqueeze(0);
  torch::Tensor windowed = model->Hidden(ids, pos);
  for (int64_t i = 0; i < t; ++i) {
    const int64_t first = std::max<int64_t>(0, i - window + 1);
    torch::Tensor alone = model->Hidden(ids.narrow(1, first, i - first + 1), pos.narrow(1, first, i - first + 1));
    EXPECT_TRUE(torch::allclose(windowed.select(1, i), alone.select(1, -1), 1e-5, 1e-5)) << i;
  }
  for (int64_t other : {5, 0}) {
    auto wider = RandomInit(WindowConfig("mistral", other, 1), 3);
    torch::Tensor last = wider->Hidden(ids, pos).select(1, t - 1);
    EXPECT_FALSE(torch::allclose(last, windowed.select(1, t - 1), 1e-4, 1e-4)) << other;
  }
}

TEST(CausalLMTest, SlidingWindowSameInEveryLayout) {
  // Sequences p+x (12 tokens) and p+y (10) longer than the window 4, so windows cut the prompt p
  // for y's tokens. Padded rows, packed spans with y attending to x's copy of p (per-span calls
  // and one mask) must give the same states and prompt gradients. Also with the window on layer
  // 1 only (Qwen2's max_window_layers), which must differ from both the window everywhere and none.
  torch::manual_seed(4);
  torch::Tensor p = torch::randint(0, 97, {1, 6}, torch::kInt64);
  torch::Tensor x = torch::randint(0, 97, {1, 6}, torch::kInt64);
  torch::Tensor y = torch::randint(0, 97, {1, 4}, torch::kInt64);
  torch::Tensor px = torch::cat({p, x}, 1), py = torch::cat({p, y}, 1);
  torch::Tensor padded = torch::cat({px, torch::cat({py, torch::zeros({1, 2}, torch::kInt64)}, 1)});
  torch::Tensor row = torch::cat({p, x, y, torch::zeros({1, 3}, torch::kInt64)}, 1);
  torch::Tensor positions =
      torch::cat({torch::arange(12), torch::arange(6, 10), torch::arange(3)}).to(torch::kInt64).unsqueeze(0);
  const std::vector<AttentionSpan> spans = {{0, 0, 12}, {0, 12, 4, 0, 6}, {0, 16, 3}};
  std::vector<torch::Tensor> y_states;
  for (int64_t first_window_layer : {0, 1}) {
    SCOPED_TRACE(first_window_layer);
    auto model = RandomInit(WindowConfig("qwen2", 4, 2, first_window_layer), 7);
    torch::Tensor reference = model->Hidden(padded);
    torch::Tensor y_grad;
    for (auto mode : {CausalLM::SpanAttention::kPerSpan, CausalLM::SpanAttention::kMask}) {
      model->SetSpanAttention(mode);
      model->zero_grad();
      torch::Tensor packed = model->Hidden(row, positions, spans);
      EXPECT_TRUE(torch::allclose(packed.narrow(1, 0, 12), reference.narrow(0, 0, 1), 1e-5, 1e-5));
      torch::Tensor y_reference = reference.narrow(0, 1, 1).narrow(1, 6, 4);
      EXPECT_TRUE(torch::allclose(packed.narrow(1, 12, 4), y_reference, 1e-5, 1e-5));
      packed.narrow(1, 12, 4).sum().backward();
      y_grad = model->named_parameters()["model.embed_tokens.weight"].grad().clone();
    }
    model->zero_grad();
    model->Hidden(py).narrow(1, 6, 4).sum().backward();
    torch::Tensor py_grad = model->named_parameters()["model.embed_tokens.weight"].grad();
    EXPECT_TRUE(torch::allclose(y_grad, py_grad, 1e-4, 1e-6));
    y_states.push_back(reference.narrow(0, 1, 1).narrow(1, 6, 4).detach());
  }
  torch::NoGradGuard no_grad;
  torch::Tensor unwindowed = RandomInit(WindowConfig("qwen2", 0, 2), 7)->Hidden(py).narrow(1, 6, 4);
  EXPECT_FALSE(torch::allclose(y_states[0], y_states[1], 1e-4, 1e-4));
  EXPECT_FALSE(torch::allclose(y_states[1], unwindowed, 1e-4, 1e-4));
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
