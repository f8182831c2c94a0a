#include "common/config/model_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "common/util/error.h"

namespace dpo {
namespace {

using nlohmann::json;

json LlamaJson() {
  return {{"model_type", "llama"},    {"vocab_size", 300},           {"hidden_size", 64},
          {"intermediate_size", 128}, {"num_hidden_layers", 2},      {"num_attention_heads", 4},
          {"num_key_value_heads", 2}, {"rms_norm_eps", 1e-5},        {"max_position_embeddings", 128},
          {"bos_token_id", 1},        {"tie_word_embeddings", false}};
}

void ExpectError(const json& j, std::initializer_list<std::string> parts) {
  try {
    ModelConfig::FromJson(j.dump(), "cfg/config.json");
    FAIL() << "no error for " << j.dump();
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("cfg/config.json"), std::string::npos) << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
  }
}

TEST(ModelConfigTest, ParsesLlamaWithDefaults) {
  auto c = ModelConfig::FromJson(LlamaJson().dump(), "x");
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.rope_type, "default");
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  // embed + lm_head + norm + 2 layers * (q 64*64 + k,v 2*64*32 + o 64*64 + mlp 3*64*128 + 2 norms)
  EXPECT_EQ(c.NumParameters(), 2 * 300 * 64 + 64 + 2 * (4096 + 4096 + 4096 + 3 * 8192 + 128));
}

TEST(ModelConfigTest, ParsesArchitectureSpecifics) {
  json q2 = LlamaJson();
  q2["model_type"] = "qwen2";
  auto c2 = ModelConfig::FromJson(q2.dump(), "x");
  EXPECT_TRUE(c2.qkv_bias);
  EXPECT_FALSE(c2.o_bias);

  json q3 = LlamaJson();
  q3["model_type"] = "qwen3";
  q3["head_dim"] = 32;
  auto c3 = ModelConfig::FromJson(q3.dump(), "x");
  EXPECT_TRUE(c3.qk_norm);
  EXPECT_EQ(c3.head_dim, 32);
  q3.erase("head_dim");
  EXPECT_EQ(ModelConfig::FromJson(q3.dump(), "x").head_dim, 128);  // transformers' default

  json l3 = LlamaJson();
  l3["rope_scaling"] = {{"rope_type", "llama3"},
                        {"factor", 8.0},
                        {"low_freq_factor", 1.0},
                        {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 64}};
  l3["rope_theta"] = 500000.0;
  auto c = ModelConfig::FromJson(l3.dump(), "x");
  EXPECT_EQ(c.rope_type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_original_max_position_embeddings, 64);

  json v5 = LlamaJson();
  v5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  EXPECT_DOUBLE_EQ(ModelConfig::FromJson(v5.dump(), "x").rope_theta, 1e6);
}

TEST(ModelConfigTest, SlidingWindowAsTransformersAppliesIt) {
  auto parse = [](const json& j) { return ModelConfig::FromJson(j.dump(), "cfg/config.json"); };
  json mistral = LlamaJson();
  mistral["model_type"] = "mistral";
  EXPECT_EQ(parse(mistral).sliding_window, 4096);  // MistralConfig's default
  mistral["sliding_window"] = nullptr;
  EXPECT_EQ(parse(mistral).sliding_window, 0);
  mistral["sliding_window"] = 64;
  ModelConfig m = parse(mistral);
  EXPECT_EQ(m.WindowOf(0), 64);
  EXPECT_EQ(m.WindowOf(1), 64);
  EXPECT_EQ(parse(json::parse(m.ToJson())).sliding_window, 64);

  json qwen = LlamaJson();
  qwen["model_type"] = "qwen2";
  qwen["sliding_window"] = 32;
  EXPECT_EQ(parse(qwen).sliding_window, 0);  // needs use_sliding_window
  qwen["use_sliding_window"] = true;
  EXPECT_EQ(parse(qwen).WindowOf(1), 0);  // max_window_layers defaults to 28
  qwen["max_window_layers"] = 1;
  ModelConfig q = parse(qwen);
  EXPECT_EQ(q.WindowOf(0), 0);
  EXPECT_EQ(q.WindowOf(1), 32);
  ModelConfig again = parse(json::parse(q.ToJson()));
  EXPECT_EQ(again.sliding_window, 32);
  EXPECT_EQ(again.max_window_layers, 1);
  // Explicit layer_types win over max_window_layers.
  qwen["layer_types"] = {"sliding_attention", "sliding_attention"};
  EXPECT_EQ(parse(qwen).WindowOf(0), 32);
  qwen["layer_types"] = {"sliding_attention", "full_attention"};
  ExpectError(qwen, {"layer_types", "layer 1"});
  qwen["layer_types"] = {"full_attention", "chunked_attention"};
  ExpectError(qwen, {"layer_types", "chunked_attention"});
}

TEST(ModelConfigTest, ToJsonRoundTripsAndKeepsOtherFields) {
  json l3 = LlamaJson();
  l3["rope_scaling"] = {{"type", "llama3"},
                        {"factor", 8.0},
                        {"low_freq_factor", 1.0},
                        {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 64}};
  auto c = ModelConfig::FromJson(l3.dump(), "x");
  json out = json::parse(c.ToJson("bfloat16"));
  EXPECT_EQ(out["bos_token_id"], 1);
  EXPECT_EQ(out["dtype"], "bfloat16");
  EXPECT_EQ(ModelConfig::FromJson(out.dump(), "y").dtype, "bfloat16");
  EXPECT_EQ(c.dtype, "");
  EXPECT_EQ(out["rope_parameters"]["rope_type"], "llama3");
  EXPECT_FALSE(out.contains("rope_scaling"));
  auto again = ModelConfig::FromJson(out.dump(), "y");
  EXPECT_EQ(again.rope_type, "llama3");
  EXPECT_EQ(again.NumParameters(), c.NumParameters());
  EXPECT_EQ(again.head_dim, c.head_dim);
}

TEST(ModelConfigTest, RejectsBadFields) {
  ExpectError(json::array(), {"JSON object"});
  json j = LlamaJson();
  j.erase("hidden_size");
  ExpectError(j, {"'hidden_size'", "missing"});
  j = LlamaJson();
  j["hidden_size"] = 66;
  ExpectError(j, {"'hidden_size'", "not divisible by num_attention_heads"});
  j = LlamaJson();
  j["num_hidden_layers"] = -2;
  ExpectError(j, {"'num_hidden_layers'", "positive"});
  j = LlamaJson();
  j["vocab_size"] = "300";
  ExpectError(j, {"'vocab_size'", "expected an integer"});
  j = LlamaJson();
  j["vocab_size"] = 3.5;
  ExpectError(j, {"'vocab_size'", "expected an integer"});
  j = LlamaJson();
  j["num_key_value_heads"] = 3;
  ExpectError(j, {"'num_key_value_heads'", "does not divide"});
  j = LlamaJson();
  j["tie_word_embeddings"] = 1;
  ExpectError(j, {"'tie_word_embeddings'", "true/false"});
  j = LlamaJson();
  j["model_type"] = "gpt2";
  ExpectError(j, {"'model_type'", "unsupported 'gpt2'"});
  j = LlamaJson();
  j["hidden_act"] = "gelu";
  ExpectError(j, {"'hidden_act'"});
  j = LlamaJson();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 2.0}};
  ExpectError(j, {"'rope_type'", "yarn"});
  j = LlamaJson();
  j["torch_dtype"] = "int8";
  ExpectError(j, {"'torch_dtype'", "int8"});
  j = LlamaJson();
  j["rms_norm_eps"] = -1.0;
  ExpectError(j, {"'rms_norm_eps'"});
  j = LlamaJson();
  j["intermediate_size"] = int64_t{1} << 40;
  j["num_hidden_layers"] = int64_t{1} << 20;
  ExpectError(j, {"'intermediate_size'", "too large"});
  EXPECT_THROW(ModelConfig::FromJson("{bad", "x"), Error);
  EXPECT_THROW(ModelConfig::FromJsonFile("/nonexistent/config.json"), Error);
}

TEST(ModelConfigTest, RefusesParameterCountsThatCouldNeverFitNamingTheField) {
  json j = LlamaJson();
  j["num_hidden_layers"] = 1000000000;  // 5e13 parameters: over the 1e13 limit
  ExpectError(j, {"'num_hidden_layers'", "1000000000 is too large", "parameters"});
  j = LlamaJson();
  j["hidden_size"] = int64_t{1} << 40;  // hidden_size^2 overflows int64: still named, no overflow
  j["head_dim"] = 16;
  ExpectError(j, {"'hidden_size'", "too large"});
  j = LlamaJson();
  j["vocab_size"] = int64_t{1} << 50;
  ExpectError(j, {"'vocab_size'", "too large"});
  // Validate refuses a config built in code too (CausalLM calls it before allocating).
  ModelConfig c = ModelConfig::FromJson(LlamaJson().dump(), "cfg");
  c.num_hidden_layers = int64_t{1} << 40;
  try {
    c.Validate("built in code");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("built in code: field 'num_hidden_layers'"), std::string::npos) << e.what();
  }
  // Just under the limit passes (a 70B-class count is far below it).
  j = LlamaJson();
  j["vocab_size"] = 128256;
  j["hidden_size"] = 8192;
  j["intermediate_size"] = 28672;
  j["num_hidden_layers"] = 80;
  j["num_attention_heads"] = 64;
  j["num_key_value_heads"] = 8;
  EXPECT_GT(ModelConfig::FromJson(j.dump(), "cfg").NumParameters(), int64_t{70} * 1000 * 1000 * 1000);
}

}  // namespace
}  // namespace dpo
