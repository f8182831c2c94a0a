// Runs under `mpirun -np 2`: real ranks, real MPI.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "worker/comm/gradient_reducer.h"
#include "worker/comm/process_group.h"

namespace dpo {
namespace {

ProcessGroup& Group() {
  static MpiSession session(nullptr, nullptr);
  static std::unique_ptr<ProcessGroup> group = MakeMpiProcessGroup();
  return *group;
}

TEST(MpiProcessGroupTest, AllReduceSumsAcrossRanksForEachDtype) {
  ProcessGroup& g = Group();
  ASSERT_GE(g.world_size(), 2) << "run under mpirun -np 2";
  const int n = g.world_size();
  const double expected = n * (n + 1) / 2.0;  // ranks contribute 1, 2, ..., n
  for (auto dtype : {at::kFloat, at::kDouble, at::kLong, at::kBFloat16}) {
    at::Tensor t = torch::full({5}, g.rank() + 1, torch::dtype(dtype));
    g.AllReduceSum(t);
    EXPECT_TRUE(torch::equal(t, torch::full({5}, expected, torch::dtype(dtype))))
        << c10::toString(dtype);
  }
  EXPECT_DOUBLE_EQ(g.AllReduceScalar(g.rank() + 1.0), expected);
}

TEST(MpiProcessGroupTest, BroadcastCopiesRootTensor) {
  ProcessGroup& g = Group();
  at::Tensor t = torch::arange(6, torch::kFloat) * (g.rank() == 1 ? 10 : 1);
  g.Broadcast(t, /*root=*/1);
  EXPECT_TRUE(torch::equal(t, torch::arange(6, torch::kFloat) * 10));
}

TEST(GradientReducerTest, AveragesGradientsInReverseOrderBuckets) {
  ProcessGroup& g = Group();
  std::vector<at::Tensor> params;
  for (int i = 0; i < 4; ++i) params.push_back(torch::zeros({3, 100}, torch::requires_grad()));
  // A bucket of ~1.2 KB holds one 1.2 KB parameter: four buckets.
  GradientReducer reducer(params, g, {.bucket_bytes = 1200});
  EXPECT_EQ(reducer.num_buckets(), 4u);
  for (int i = 0; i < 4; ++i) {
    if (i == 2 && g.rank() == 0) continue;  // rank 0 has no gradient for param 2: counts as 0
    params[i].mutable_grad() = torch::full({3, 100}, (g.rank() + 1) * (i + 1.0));
  }
  reducer.AverageGradients();
  const double n = g.world_size();
  for (int i = 0; i < 4; ++i) {
    double sum_of_ranks = n * (n + 1) / 2.0;
    if (i == 2) sum_of_ranks -= 1.0;  // rank 0 sent zeros
    double expected = sum_of_ranks * (i + 1.0) / n;
    ASSERT_TRUE(params[i].grad().defined());
    EXPECT_TRUE(torch::allclose(params[i].grad(), torch::full({3, 100}, expected))) << i;
  }
}

}  // namespace
}  // namespace dpo
