#include "common/config/memory_plan.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <utility>

#include "common/util/error.h"

namespace dpo {
namespace {

using Sharding = TrainSection::Sharding;

// The shape of examples/tiny-llama/config.json: per layer q 64·64, k and v 64·32, o 64·64,
// gate/up/down 64·128, two norms of 64 = 36992; root = 2·1024·64 + 64 = 131136.
ModelConfig Tiny() {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 1024;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 2048;
  return c;
}

// bf16 on, model.dtype float32, 4 pairs of 256 tokens, no checkpointing, reference model.
JobSpec TinySpec() {
  JobSpec spec;
  spec.train.bf16 = true;
  spec.train.per_device_train_batch_size = 4;
  spec.data.max_length = 256;
  return spec;
}

MemoryPlanOptions Ranks(int64_t ranks, bool gpu = false) {
  MemoryPlanOptions options;
  options.ranks = ranks;
  options.gpu = gpu;
  return options;
}

double ModelState(const MemoryPlan& plan, Sharding sharding) {
  const ModeMemory& m = plan.mode(sharding);
  return m.parameters + m.gradients + m.optimizer;
}

// examples/shapes/<name>.json: real models' shapes.
ModelConfig Shape(const std::string& name) {
  const char* dir = std::getenv("DPO_SOURCE_DIR");
  const std::string source = dir ? dir : ".";
  return ModelConfig::FromJsonFile(source + "/examples/shapes/" + name + ".json");
}

TEST(MemoryPlanTest, TinyModelByHand) {
  const MemoryPlan plan = PlanMemory(Tiny(), TinySpec(), Ranks(2));
  EXPECT_EQ(plan.parameters, 205120);
  EXPECT_EQ(plan.largest_layer_parameters, 36992);
  EXPECT_EQ(plan.root_parameters, 131136);
  EXPECT_EQ(plan.shard_parameters, 2 * 18496 + 65568);  // 102560
  EXPECT_TRUE(plan.bf16);

  // m = 4 (float32 masters), c = 2 (bf16 compute), r = 4 (float32 reduce).
  // Activations: N = 2·4·256 = 2048 tokens, a = 2, per token and layer 6·64 + 2·(64 + 32) +
  // 4·128 = 1088: 2048·2·2·1088 = 8912896; head 2·512·1024·4 = 4194304.
  const double activations = 8912896 + 4194304;
  const ModeMemory& none = plan.mode(Sharding::kNone);
  EXPECT_EQ(none.parameters, 820480);
  EXPECT_EQ(none.gradients, 820480);
  // AdamW's fp32 step counters: one per parameter tensor (2 layers x 9 + embedding, norm,
  // lm_head = 21) replicated, one per unit (3) sharded.
  EXPECT_EQ(none.optimizer, 1640960 + 4 * 21);
  EXPECT_EQ(none.reference, 820480);
  EXPECT_EQ(none.activations, activations);
  EXPECT_EQ(none.total, 4102400 + 4 * 21 + activations);

  // Transient gradients: (2 + 4)·(3·36992 + 131136) = 1452672.
  const ModeMemory& optimizer = plan.mode(Sharding::kOptimizer);
  EXPECT_EQ(optimizer.parameters, 4 * 102560 + 2 * 205120);
  EXPECT_EQ(optimizer.gradients, 4 * 102560 + 1452672);
  EXPECT_EQ(optimizer.optimizer, 2 * 4 * 102560 + 4 * 3);
  EXPECT_EQ(optimizer.reference, 820480);
  EXPECT_EQ(optimizer.total, 820480 + 1862912 + 820480 + 4 * 3 + 820480 + activations);

  const ModeMemory& full = plan.mode(Sharding::kFull);
  EXPECT_EQ(full.parameters, 4 * 102560 + 2 * (131136 + 2 * 36992));
  EXPECT_EQ(full.gradients, 1862912);
  EXPECT_EQ(full.optimizer, 820480 + 4 * 3);
  EXPECT_EQ(full.reference, 2 * 102560 + 2 * (131136 + 2 * 36992));
  EXPECT_EQ(full.total, 820480 + 1862912 + 820480 + 4 * 3 + 615360 + activations);
}

TEST(MemoryPlanTest, DtypesCheckpointingAndReferenceModes) {
  JobSpec spec = TinySpec();
  spec.train.bf16.reset();  // null: off on the CPU, on on GPUs
  EXPECT_FALSE(PlanMemory(Tiny(), spec, Ranks(2)).bf16);
  EXPECT_TRUE(PlanMemory(Tiny(), spec, Ranks(2, /*gpu=*/true)).bf16);

  // bf16 off, bf16 masters: c = m = 2; bf16 reduce: r = 2; activations in 4 bytes.
  spec.train.bf16 = false;
  spec.model.dtype = ModelSection::Dtype::kBFloat16;
  spec.train.reduce_dtype = TrainSection::ReduceDtype::kBFloat16;
  spec.train.gradient_checkpointing = true;
  const MemoryPlan plan = PlanMemory(Tiny(), spec, Ranks(2));
  EXPECT_EQ(plan.mode(Sharding::kOptimizer).gradients, 2 * 102560 + 4 * 242112);
  EXPECT_EQ(plan.mode(Sharding::kFull).parameters, 2 * 102560 + 2 * 205120);
  // Checkpointing: 2048·4·(2·64 + 1088) + the head.
  EXPECT_EQ(plan.mode(Sharding::kNone).activations, 2048.0 * 4 * 1216 + 4194304);

  // max_length null: the model's max_position_embeddings.
  spec.data.max_length.reset();
  EXPECT_EQ(PlanMemory(Tiny(), spec, Ranks(2)).mode(Sharding::kNone).activations, 2 * 4 * 2048.0 * 4 * 1216 + 4194304);

  spec.reference.mode = ReferenceSection::Mode::kNone;
  for (const ModeMemory& mode : PlanMemory(Tiny(), spec, Ranks(2)).modes) {
    EXPECT_EQ(mode.reference, 0);
  }

  // Precomputed: reported, but not held while training.
  spec.reference.mode = ReferenceSection::Mode::kPrecomputed;
  const MemoryPlan precomputed = PlanMemory(Tiny(), spec, Ranks(2));
  EXPECT_TRUE(precomputed.reference_precompute_only);
  for (const ModeMemory& mode : precomputed.modes) {
    EXPECT_GT(mode.reference, 0);
    EXPECT_EQ(mode.total, mode.parameters + mode.gradients + mode.optimizer + mode.activations);
  }
  EXPECT_NE(FormatMemoryPlan(precomputed).find("reference (precompute phase)"), std::string::npos);
}

TEST(MemoryPlanTest, ADifferentReferenceIsCountedWithItsOwnShape) {
  MemoryPlanOptions options = Ranks(2);
  ModelConfig reference = Tiny();
  reference.num_hidden_layers = 4;
  options.reference_config = reference;
  const MemoryPlan plan = PlanMemory(Tiny(), TinySpec(), options);
  EXPECT_EQ(plan.mode(Sharding::kNone).reference, 4.0 * (4 * 36992 + 131136));
  EXPECT_EQ(plan.mode(Sharding::kFull).reference, 2.0 * (4 * 18496 + 65568) + 2.0 * (131136 + 2 * 36992));
  EXPECT_EQ(plan.parameters, 205120);  // the policy is unchanged
}

TEST(MemoryPlanTest, ParameterCountsMatchTheModelsEveryLayout) {
  // Every optional parameter on (llama biases, qwen2's q/k/v bias, qwen3's q/k norms), tied and
  // not: the planner's unit sum equals ModelConfig's count, and the shards cover it.
  for (int variant = 0; variant < 8; ++variant) {
    ModelConfig c = Tiny();
    c.qkv_bias = (variant & 1) != 0;
    c.o_bias = (variant & 1) != 0;
    c.mlp_bias = (variant & 2) != 0;
    c.qk_norm = (variant & 4) != 0;
    c.tie_word_embeddings = (variant & 2) != 0;
    for (int64_t ranks : {1, 2, 3, 7, 64, 1000}) {
      const MemoryPlan plan = PlanMemory(c, TinySpec(), Ranks(ranks));
      EXPECT_EQ(plan.parameters, c.NumParameters()) << variant;
      EXPECT_GE(plan.shard_parameters * ranks, plan.parameters) << variant << " W=" << ranks;
      // Padding is less than one element per rank and unit.
      EXPECT_LT(plan.shard_parameters * ranks, plan.parameters + ranks * (c.num_hidden_layers + 1));
    }
  }
}

TEST(MemoryPlanTest, ShardingNeverCostsMoreModelStateOnTwoOrMoreRanks) {
  for (const char* name : {"qwen2.5-0.5b", "llama-3-8b", "llama-3-70b"}) {
    const ModelConfig c = Shape(name);
    for (bool bf16 : {false, true}) {
      for (auto reduce : {TrainSection::ReduceDtype::kFloat32, TrainSection::ReduceDtype::kBFloat16}) {
        JobSpec spec = TinySpec();
        spec.train.bf16 = bf16;
        spec.train.reduce_dtype = reduce;
        const MemoryPlan one = PlanMemory(c, spec, Ranks(1));
        // W = 1: a shard is the whole unit, and sharding only adds copies and buffers.
        EXPECT_EQ(one.shard_parameters, one.parameters);
        EXPECT_GE(ModelState(one, Sharding::kOptimizer), ModelState(one, Sharding::kNone)) << name;
        EXPECT_GE(ModelState(one, Sharding::kFull), one.mode(Sharding::kNone).parameters) << name;
        for (int64_t ranks : {2, 8, 64}) {
          const MemoryPlan plan = PlanMemory(c, spec, Ranks(ranks));
          EXPECT_LE(ModelState(plan, Sharding::kFull), ModelState(plan, Sharding::kOptimizer))
              << name << " W=" << ranks << " bf16=" << bf16;
          EXPECT_LE(ModelState(plan, Sharding::kOptimizer), ModelState(plan, Sharding::kNone))
              << name << " W=" << ranks << " bf16=" << bf16;
        }
      }
    }
  }
}

TEST(MemoryPlanTest, ShippedShapesHaveTheKnownParameterCounts) {
  // The counts Hugging Face reports for Qwen2.5-0.5B, Meta-Llama-3-8B and Meta-Llama-3-70B.
  const std::pair<const char*, int64_t> known[] = {
      {"qwen2.5-0.5b", 494032768}, {"llama-3-8b", 8030261248}, {"llama-3-70b", 70553706496}};
  for (const auto& [name, parameters] : known) {
    EXPECT_EQ(PlanMemory(Shape(name), TinySpec(), Ranks(8)).parameters, parameters) << name;
  }
}

TEST(MemoryPlanTest, FitsComparesTheTotalWithTheDevice) {
  MemoryPlanOptions options = Ranks(2);
  const double full_total = PlanMemory(Tiny(), TinySpec(), options).mode(Sharding::kFull).total;
  options.device_gib = full_total / (1 << 30);  // enough for full and none, not for optimizer
  const MemoryPlan plan = PlanMemory(Tiny(), TinySpec(), options);
  EXPECT_TRUE(plan.mode(Sharding::kFull).fits);
  EXPECT_TRUE(plan.mode(Sharding::kNone).fits);
  EXPECT_FALSE(plan.mode(Sharding::kOptimizer).fits);
  const std::string why = DescribeMisfit(plan, Sharding::kOptimizer);
  EXPECT_NE(why.find("train.sharding: optimizer needs 0.02 GiB per rank on 2 rank(s)"), std::string::npos) << why;
  EXPECT_NE(why.find("modes that fit: none, full"), std::string::npos) << why;

  const std::string table = FormatMemoryPlan(plan);
  EXPECT_NE(table.find("optimizer: does not fit"), std::string::npos) << table;
  EXPECT_NE(table.find("full: fits"), std::string::npos) << table;

  options.device_gib = 1e-9;
  const MemoryPlan tight = PlanMemory(Tiny(), TinySpec(), options);
  EXPECT_NE(DescribeMisfit(tight, Sharding::kFull).find("no mode fits"), std::string::npos);
  options.ranks = 0;
  EXPECT_THROW(PlanMemory(Tiny(), TinySpec(), options), Error);
  options.ranks = 2;
  options.device_gib = 0;
  EXPECT_THROW(PlanMemory(Tiny(), TinySpec(), options), Error);
}

}  // namespace
}  // namespace dpo
