#include "common/model/checkpoint_io.h"

#include <gtest/gtest.h>

#include <fstream>

#include <torch/torch.h>

#include "common/model/pretrained.h"
#include "common/util/error.h"
#include "common/util/path_util.h"
#include "common/util/scratch_dir_test_util.h"

namespace dpo {
namespace {

class CheckpointIoTest : public ::testing::Test {
 protected:
  testing::ScratchDir scratch_{"ckpt_test"};
  const std::string& dir_ = scratch_.path();
  std::string Path(const std::string& a, const std::string& b = "") const {
    return b.empty() ? JoinPath(dir_, a) : JoinPath(JoinPath(dir_, a), b);
  }

  static ModelConfig Config() {
    ModelConfig c;
    c.model_type = "llama";
    c.vocab_size = 50;
    c.hidden_size = 16;
    c.intermediate_size = 24;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.head_dim = 8;
    c.max_position_embeddings = 32;
    return c;
  }

  void ExpectLoadError(const std::string& dir, std::initializer_list<std::string> parts) {
    try {
      LoadPretrained(dir, torch::kFloat32);
      FAIL() << "no error";
    } catch (const Error& e) {
      for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  }
};

TEST_F(CheckpointIoTest, ConvertsBf16AndF16) {
  torch::Tensor a = torch::randn({3, 5});
  WriteTensors(Path("x.safetensors"),
               {{"a", a.to(torch::kBFloat16)}, {"b", a.to(torch::kFloat16)}, {"i", torch::arange(4)}});
  CheckpointReader reader(Path("x.safetensors"));
  EXPECT_TRUE(torch::equal(reader.Read("a", torch::kFloat32), a.to(torch::kBFloat16).to(torch::kFloat32)));
  EXPECT_TRUE(torch::equal(reader.Read("b", torch::kFloat32), a.to(torch::kFloat16).to(torch::kFloat32)));
  EXPECT_TRUE(torch::equal(reader.Read("i", torch::kInt64), torch::arange(4)));
  EXPECT_THROW(reader.Read("i", torch::kFloat32), Error);
  EXPECT_THROW(reader.Read("missing", torch::kFloat32), Error);
}

TEST_F(CheckpointIoTest, SaveLoadRoundTripSingleAndSharded) {
  auto model = RandomInit(Config(), 9);
  torch::Tensor ids = torch::randint(50, {1, 6}, torch::kInt64);
  torch::NoGradGuard no_grad;
  torch::Tensor expected = model->Logits(ids);
  SavePretrained(*model, Path("single"));
  EXPECT_TRUE(PathExists(Path("single", "model.safetensors")));
  EXPECT_TRUE(torch::equal(LoadPretrained(Path("single"), torch::kFloat32)->Logits(ids), expected));

  SaveOptions sharded;
  sharded.max_shard_bytes = 8000;
  SavePretrained(*model, Path("sharded"), sharded);
  EXPECT_TRUE(PathExists(Path("sharded", "model.safetensors.index.json")));
  EXPECT_FALSE(PathExists(Path("sharded", "model.safetensors")));
  EXPECT_TRUE(PathExists(Path("sharded", "model-00002-of-00003.safetensors")) ||
              PathExists(Path("sharded", "model-00002-of-00004.safetensors")));
  EXPECT_TRUE(torch::equal(LoadPretrained(Path("sharded"), torch::kFloat32)->Logits(ids), expected));

  SaveOptions bf16;
  bf16.dtype = torch::kBFloat16;
  SavePretrained(*model, Path("bf16"), bf16);
  auto loaded = LoadPretrained(Path("bf16"), torch::kFloat32);
  EXPECT_TRUE(torch::allclose(loaded->Logits(ids), expected, 0.05, 0.02));
}

TEST_F(CheckpointIoTest, MissingTensorNamesFileAndTensor) {
  auto model = RandomInit(Config(), 1);
  SavePretrained(*model, dir_);
  NamedTensors partial;
  for (const auto& p : model->named_parameters()) {
    if (p.key() != "model.layers.1.mlp.gate_proj.weight") partial.emplace_back(p.key(), p.value());
  }
  WriteTensors(Path("model.safetensors"), partial);
  ExpectLoadError(dir_, {dir_, "'model.layers.1.mlp.gate_proj.weight'", "missing"});
}

TEST_F(CheckpointIoTest, ShapeMismatchAndExtraTensors) {
  auto model = RandomInit(Config(), 1);
  SavePretrained(*model, dir_);
  NamedTensors tensors;
  for (const auto& p : model->named_parameters()) tensors.emplace_back(p.key(), p.value());
  tensors.emplace_back("model.layers.0.self_attn.q_proj.bias", torch::zeros({16}));
  WriteTensors(Path("model.safetensors"), tensors);
  ExpectLoadError(dir_, {"'model.layers.0.self_attn.q_proj.bias'", "not a parameter"});
  tensors.pop_back();
  tensors[0].second = torch::zeros({3});
  WriteTensors(Path("model.safetensors"), tensors);
  ExpectLoadError(dir_, {"'" + tensors[0].first + "'", "shape"});
}

TEST_F(CheckpointIoTest, CorruptFileAndMissingConfig) {
  ExpectLoadError(dir_, {"config.json"});
  auto model = RandomInit(Config(), 1);
  SavePretrained(*model, dir_);
  std::ofstream(Path("model.safetensors"), std::ios::binary | std::ios::trunc) << "garbage!!";
  ExpectLoadError(dir_, {"model.safetensors", "header length"});
}

TEST_F(CheckpointIoTest, CopiesTokenizerFiles) {
  MakeDirectories(Path("tok"));
  std::ofstream(Path("tok", "tokenizer.json")) << "{}";
  auto model = RandomInit(Config(), 1);
  SaveOptions options;
  options.tokenizer_dir = Path("tok");
  SavePretrained(*model, Path("out"), options);
  EXPECT_TRUE(PathExists(Path("out", "tokenizer.json")));
  EXPECT_FALSE(PathExists(Path("out", "special_tokens_map.json")));
  EXPECT_TRUE(PathExists(Path("out", "config.json")));
}

}  // namespace
}  // namespace dpo
