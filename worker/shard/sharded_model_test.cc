// ShardedModel and its checkpoints on 2 real MPI ranks (ctest runs this under mpirun -np 2):
// the sharded gradients equal a replicated model's rank-averaged gradients, slice by slice, and
// a sharded checkpoint reads back by shard and by parameter.
#include "worker/shard/sharded_model.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <torch/torch.h>

#include "common/model/causal_lm.h"
#include "common/model/model_test_util.h"
#include "common/model/pretrained.h"
#include "common/util/path_util.h"
#include "worker/comm/process_group.h"
#include "worker/optim/adamw.h"
#include "worker/shard/shard_checkpoint.h"
#include "worker/train/checkpoint.h"

namespace dpo {
namespace {

ProcessGroup& Group() {
  static std::unique_ptr<ProcessGroup> group = [] {
    static MpiSession session(nullptr, nullptr);
    return MakeMpiProcessGroup();
  }();
  return *group;
}

// A loss that reads every parameter, on rank-specific tokens (ranks see different data).
at::Tensor Loss(CausalLM& model, int64_t rank) {
  at::Tensor ids = (torch::arange(12, torch::kInt64).view({2, 6}) * (rank + 3)) % 97;
  return model.Logits(ids).square().mean();
}

struct Case {
  std::string type;
  bool reshard;
  bool checkpoint;
};

class ShardedGradientTest : public ::testing::TestWithParam<Case> {};

TEST_P(ShardedGradientTest, MasterGradientsAreTheRankAverageOfReplicatedGradients) {
  const Case c = GetParam();
  ProcessGroup& group = Group();
  const ModelConfig config = testing::TinyConfig(c.type);
  auto replicated = RandomInit(config, /*seed=*/5);
  replicated->SetActivationCheckpointing(c.checkpoint);
  Loss(*replicated, group.rank()).backward();

  auto model = RandomInit(config, /*seed=*/5);
  model->SetActivationCheckpointing(c.checkpoint);
  ShardingOptions options;
  options.reshard_after_use = c.reshard;
  ShardedModel sharded(model, group, options);
  // Two micro-batches: the masters' gradients must accumulate across AfterBackward calls.
  for (int micro = 0; micro < 2; ++micro) {
    const at::Tensor loss = Loss(sharded.model(), group.rank());
    EXPECT_NEAR(loss.item<double>(), Loss(*replicated, group.rank()).item<double>(), 1e-6);
    (loss * 0.5).backward();
    sharded.AfterBackward();
  }

  const auto layouts = sharded.layouts();
  std::map<std::string, at::Tensor> grads;
  for (auto& item : replicated->named_parameters()) grads[item.key()] = item.value().grad();
  for (size_t u = 0; u < layouts.size(); ++u) {
    const UnitLayout& unit = layouts[u];
    at::Tensor flat = torch::zeros({unit.shard_numel * group.world_size()});
    for (const FlatParam& p : unit.params) flat.narrow(0, p.offset, p.numel).copy_(grads.at(p.name).reshape(-1));
    group.AllReduceSum(flat);
    flat.div_(group.world_size());
    const at::Tensor mine = flat.narrow(0, group.rank() * unit.shard_numel, unit.shard_numel);
    const at::Tensor& got = sharded.master_shards()[u].grad();
    ASSERT_TRUE(got.defined()) << unit.name;
    EXPECT_TRUE(torch::allclose(got, mine, /*rtol=*/1e-5, /*atol=*/1e-7))
        << unit.name << " max diff " << (got - mine).abs().max().item<double>();
  }
  if (c.reshard) {
    // At rest nothing is gathered: only the masters and their gradients remain.
    int64_t master_bytes = 0;
    for (const at::Tensor& m : sharded.master_shards()) master_bytes += 2 * m.numel() * 4;
    EXPECT_EQ(sharded.ResidentBytes(), master_bytes);
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, ShardedGradientTest,
                         ::testing::Values(Case{"llama", true, false}, Case{"llama", true, true},
                                           Case{"llama", false, false}, Case{"qwen3", true, false},
                                           Case{"qwen2", true, true}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.type + (info.param.reshard ? "_full" : "_optimizer") +
                                  (info.param.checkpoint ? "_checkpointed" : "");
                         });

TEST(ShardCheckpointTest, ReadsBackByShardAndByParameter) {
  ProcessGroup& group = Group();
  const ModelConfig config = testing::TinyConfig("llama");
  auto plain = RandomInit(config, /*seed=*/9);
  ShardedModel sharded(RandomInit(config, /*seed=*/9), group, ShardingOptions{});
  std::vector<std::string> names;
  for (const UnitLayout& unit : sharded.layouts()) names.push_back(unit.name);
  AdamW named(sharded.master_shards(), names, AdamWOptions{});
  Loss(sharded.model(), group.rank()).backward();
  sharded.AfterBackward();
  named.Step(1e-3);

  // Every rank must name the same directory.
  const std::string dir = "/tmp/dpo-shard-checkpoint-test-" +
                          std::to_string(static_cast<int64_t>(group.AllReduceScalar(group.rank() == 0 ? getpid() : 0)));
  if (group.rank() == 0) RemoveTree(dir);
  group.Barrier();
  TrainerState state;
  state.global_step = 1;
  const std::string saved = SaveShardedCheckpoint(dir, sharded, named.StateDict(), state, "", "full", group);
  const std::string checkpoint = dir + "/checkpoint-1";
  if (group.rank() == 0) {
    EXPECT_EQ(saved, checkpoint);
  }

  const OptimizerStateReader reader(checkpoint);
  const auto shards = reader.ForShards(sharded.layouts(), group.rank(), c10::kCPU);
  for (const auto& [key, tensor] : named.StateDict()) {
    EXPECT_TRUE(torch::equal(shards.at(key), tensor)) << key;
  }
  // By parameter: the whole exp_avg of each parameter, from both ranks' files.
  std::vector<std::string> params;
  std::vector<std::vector<int64_t>> shapes;
  for (auto& item : plain->named_parameters()) {
    params.push_back(item.key());
    shapes.push_back(item.value().sizes().vec());
  }
  const auto whole = reader.ForParameters(params, shapes, c10::kCPU);
  for (const UnitLayout& unit : sharded.layouts()) {
    at::Tensor flat = torch::zeros({unit.shard_numel * group.world_size()});
    const at::Tensor& mine = named.StateDict().at("exp_avg." + unit.name);
    flat.narrow(0, group.rank() * unit.shard_numel, unit.shard_numel).copy_(mine);
    group.AllReduceSum(flat);  // other ranks' slices are zero here
    for (const FlatParam& p : unit.params) {
      EXPECT_TRUE(torch::equal(whole.at("exp_avg." + p.name).reshape(-1), flat.narrow(0, p.offset, p.numel))) << p.name;
    }
  }
  // model/ is a complete HF directory of the masters.
  auto loaded = LoadPretrained(checkpoint + "/model", torch::kFloat32);
  std::map<std::string, at::Tensor> stored;
  for (auto& item : loaded->named_parameters()) stored[item.key()] = item.value();
  const size_t units = sharded.layouts().size();
  size_t compared = 0;
  for (size_t u = 0; u < units; ++u) {
    for (const auto& [name, tensor] : sharded.GatherUnitForSave(u)) {
      EXPECT_TRUE(torch::equal(stored.at(name), tensor)) << name;
      ++compared;
    }
  }
  EXPECT_EQ(compared, stored.size());
  group.Barrier();
  if (group.rank() == 0) RemoveTree(dir);
}

}  // namespace
}  // namespace dpo
