#include "worker/train/checkpoint.h"

#include <gtest/gtest.h>

#include <fstream>

#include <torch/torch.h>

#include "common/model/causal_lm.h"
#include "common/model/model_test_util.h"
#include "common/util/error.h"
#include "common/util/path_util.h"
#include "common/util/scratch_dir_test_util.h"

namespace dpo {
namespace {

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = std::make_shared<CausalLM>(testing::TinyConfig("llama"), torch::TensorOptions().dtype(torch::kFloat32));
    model_->InitWeights(1);
  }

  std::string Save(int64_t step) {
    TrainerState state;
    state.global_step = step;
    state.epoch = 1;
    state.batch_in_epoch = 7;
    state.rng_state_hex = "00ff";
    state.job_spec_yaml = "train: {max_steps: 9}\n";
    return SaveCheckpoint(dir_, *model_, optimizer_, state, /*tokenizer_dir=*/"");
  }

  testing::ScratchDir scratch_{"train_ckpt_test"};
  const std::string& dir_ = scratch_.path();
  std::shared_ptr<CausalLM> model_;
  std::map<std::string, at::Tensor> optimizer_{{"exp_avg.lm_head.weight", torch::randn({97, 32})},
                                               {"step.lm_head.weight", torch::full({1}, 3.0)}};
};

TEST_F(CheckpointTest, RoundTripRestoresWeightsOptimizerAndState) {
  const std::string saved = Save(4);
  EXPECT_EQ(saved, JoinPath(dir_, "checkpoint-4"));
  const auto before = model_->named_parameters()["model.layers.1.mlp.up_proj.weight"].clone();
  model_->InitWeights(2);  // different weights, then restore
  ASSERT_FALSE(torch::equal(before, model_->named_parameters()["model.layers.1.mlp.up_proj.weight"]));
  LoadedCheckpoint loaded = LoadCheckpoint(saved, *model_);
  EXPECT_TRUE(torch::equal(before, model_->named_parameters()["model.layers.1.mlp.up_proj.weight"]));
  EXPECT_EQ(loaded.state.global_step, 4);
  EXPECT_EQ(loaded.state.epoch, 1);
  EXPECT_EQ(loaded.state.batch_in_epoch, 7);
  EXPECT_EQ(loaded.state.rng_state_hex, "00ff");
  EXPECT_EQ(loaded.state.job_spec_yaml, "train: {max_steps: 9}\n");
  ASSERT_EQ(loaded.optimizer_state.size(), 2u);
  for (const auto& [name, tensor] : optimizer_) {
    EXPECT_TRUE(torch::equal(loaded.optimizer_state.at(name), tensor)) << name;
  }
  EXPECT_TRUE(IsRegularFile(JoinPath(JoinPath(saved, "model"), "config.json")));
}

TEST_F(CheckpointTest, NonFiniteWeightsAreNeverSaved) {
  {
    torch::NoGradGuard no_grad;
    model_->named_parameters()["model.norm.weight"][3] = std::nan("");
  }
  try {
    Save(2);
    FAIL() << "saved a NaN model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.norm.weight"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(ListCheckpoints(dir_).empty());
  EXPECT_FALSE(PathExists(JoinPath(dir_, "checkpoint-2")));
}

TEST_F(CheckpointTest, OnlyCompleteCheckpointsCountAndPruneKeepsTheNewest) {
  for (int64_t step : {10, 2, 30}) Save(step);
  // Leftovers of an interrupted save and unrelated names are not checkpoints.
  MakeDirectories(JoinPath(dir_, ".tmp-checkpoint-40-123"));
  MakeDirectories(JoinPath(dir_, "checkpoint-50-partial"));
  std::ofstream(JoinPath(dir_, "checkpoint-60")) << "a file, not a directory";
  EXPECT_EQ(ListCheckpoints(dir_),
            (std::vector<std::string>{JoinPath(dir_, "checkpoint-2"), JoinPath(dir_, "checkpoint-10"),
                                      JoinPath(dir_, "checkpoint-30")}));
  EXPECT_EQ(ResolveCheckpoint("latest", dir_), JoinPath(dir_, "checkpoint-30"));
  PruneCheckpoints(dir_, 2);
  EXPECT_EQ(ListCheckpoints(dir_),
            (std::vector<std::string>{JoinPath(dir_, "checkpoint-10"), JoinPath(dir_, "checkpoint-30")}));
  EXPECT_TRUE(PathExists(JoinPath(dir_, ".tmp-checkpoint-40-123")));  // prune leaves non-checkpoints
}

TEST_F(CheckpointTest, ResolveNamesWhatIsMissing) {
  EXPECT_EQ(ResolveCheckpoint("latest", dir_), std::nullopt);
  EXPECT_EQ(ResolveCheckpoint("latest", JoinPath(dir_, "no-such-dir")), std::nullopt);
  try {
    ResolveCheckpoint(JoinPath(dir_, "checkpoint-9"), dir_);
    FAIL() << "resolved a missing checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("output.resume_from_checkpoint"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("checkpoint-9"), std::string::npos);
  }
}

TEST_F(CheckpointTest, BadTrainerStateNamesFileAndField) {
  const std::string saved = Save(5);
  const std::string state_file = JoinPath(saved, "trainer_state.json");
  auto expect_error = [&](const std::string& text, const std::string& part) {
    std::ofstream(state_file, std::ios::trunc) << text;
    try {
      LoadCheckpoint(saved, *model_);
      FAIL() << "loaded: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(state_file), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error("{\"global_step\": 5", "not JSON");
  expect_error("{\"global_step\": \"five\"}", "global_step: wrong type");
  expect_error("{\"global_step\": 5, \"epoch\": 0}", "batch_in_epoch: missing");
}

}  // namespace
}  // namespace dpo
