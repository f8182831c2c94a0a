// Runs under `mpirun -np 2`: real ranks, real MPI.
#include <gtest/gtest.h>

#include <algorithm>

#include <torch/torch.h>

#include "common/util/error.h"
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
    EXPECT_TRUE(torch::equal(t, torch::full({5}, expected, torch::dtype(dtype)))) << c10::toString(dtype);
  }
  EXPECT_DOUBLE_EQ(g.AllReduceScalar(g.rank() + 1.0), expected);
}

TEST(MpiProcessGroupTest, BroadcastCopiesRootTensor) {
  ProcessGroup& g = Group();
  at::Tensor t = torch::arange(6, torch::kFloat) * (g.rank() == 1 ? 10 : 1);
  g.Broadcast(t, /*root=*/1);
  EXPECT_TRUE(torch::equal(t, torch::arange(6, torch::kFloat) * 10));
}

// Rank r's shard: 10·r + 0, 1, 2, exact in bf16 up to 25 ranks; int64 adds 2^56 + 1 per rank,
// which a float or double on the way would round.
at::Tensor Shard(int rank, at::ScalarType dtype) {
  const int64_t base = dtype == at::kLong ? ((int64_t{1} << 56) + 1) * rank : 10 * rank;
  return torch::arange(3, torch::dtype(dtype)) + base;
}

TEST(MpiProcessGroupTest, AllGatherPlacesEachRanksShardAtItsOffset) {
  ProcessGroup& g = Group();
  const int n = g.world_size();
  for (auto dtype : {at::kFloat, at::kBFloat16, at::kLong}) {
    at::Tensor output = torch::full({n, 3}, -1, torch::dtype(dtype));
    g.AllGatherAsync(Shard(g.rank(), dtype), output)->Wait();
    for (int r = 0; r < n; ++r) {
      EXPECT_TRUE(torch::equal(output[r], Shard(r, dtype))) << c10::toString(dtype) << " rank " << r << ": " << output;
    }
  }
}

// Rank r holds (r + 1)·(j + 1) at position j of n·m: rank r's output is the sum over ranks of
// its slice [r·m, (r + 1)·m), that is n(n+1)/2 · (r·m + k + 1) at k.
TEST(MpiProcessGroupTest, ReduceScatterSumsThisRanksSlice) {
  ProcessGroup& g = Group();
  const int n = g.world_size(), m = 4;
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    at::Tensor input = (torch::arange(1, n * m + 1) * (g.rank() + 1)).to(dtype);
    at::Tensor output = torch::full({m}, -1, torch::dtype(dtype));
    g.ReduceScatterSumAsync(input, output)->Wait();
    at::Tensor expected = (torch::arange(1, m + 1) + g.rank() * m) * (n * (n + 1) / 2);
    EXPECT_TRUE(torch::equal(output, expected.to(dtype))) << c10::toString(dtype) << ": " << output;
  }
}

TEST(MpiProcessGroupTest, CollectivesInFlightTogetherCompleteWhenWaitedInOrder) {
  ProcessGroup& g = Group();
  const int n = g.world_size();
  at::Tensor gathered = torch::zeros({n, 3});
  at::Tensor scattered = torch::zeros({2}, torch::kBFloat16);  // completed by a copy in Wait
  at::Tensor summed = torch::full({5}, g.rank() + 1.0);
  auto gather = g.AllGatherAsync(Shard(g.rank(), at::kFloat), gathered);
  auto scatter = g.ReduceScatterSumAsync(torch::ones({2 * n}, torch::kBFloat16), scattered);
  auto reduce = g.AllReduceSumAsync(summed);
  gather->Wait();
  scatter->Wait();
  reduce->Wait();
  for (int r = 0; r < n; ++r) EXPECT_TRUE(torch::equal(gathered[r], Shard(r, at::kFloat))) << r;
  EXPECT_TRUE(torch::equal(scattered, torch::full({2}, n, torch::kBFloat16))) << scattered;
  EXPECT_TRUE(torch::equal(summed, torch::full({5}, n * (n + 1) / 2.0))) << summed;
}

TEST(MpiProcessGroupTest, MismatchedShardsThrowBeforeCommunicating) {
  ProcessGroup& g = Group();
  const int n = g.world_size();
  // Every rank throws alike, so none is left waiting in a collective.
  EXPECT_THROW(g.AllGatherAsync(torch::zeros({3}), torch::zeros({3 * n + 1})), Error);
  EXPECT_THROW(g.ReduceScatterSumAsync(torch::zeros({3 * n - 1}), torch::zeros({3})), Error);
  EXPECT_THROW(g.AllGatherAsync(torch::zeros({3}), torch::zeros({3 * n}, torch::kDouble)), Error);
  // And the group still works afterwards.
  at::Tensor output = torch::zeros({n, 3});
  g.AllGatherAsync(Shard(g.rank(), at::kFloat), output)->Wait();
  EXPECT_TRUE(torch::equal(output[n - 1], Shard(n - 1, at::kFloat)));
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

// Four parameters whose gradients differ per rank: d/dw_i of sum((rank + 1) * (i + 1) * w_i * x)
// is (rank + 1) * (i + 1) * x, so the mean over ranks is known in closed form.
struct HookedModel {
  explicit HookedModel(ProcessGroup& g) : group(g) {
    for (int i = 0; i < 4; ++i) params.push_back(torch::ones({3, 100}, torch::requires_grad()));
  }
  void Backward(double x, std::vector<int> skip = {}) {
    at::Tensor loss = torch::zeros({});
    for (int i = 0; i < 4; ++i) {
      if (std::find(skip.begin(), skip.end(), i) != skip.end()) continue;
      loss = loss + (group.rank() + 1.0) * (i + 1.0) * x * params[i].sum();
    }
    loss.backward();
  }
  double MeanOverRanks(double per_rank_unit) const {
    const double n = group.world_size();
    return per_rank_unit * (n * (n + 1) / 2.0) / n;
  }
  ProcessGroup& group;
  std::vector<at::Tensor> params;
};

TEST(GradientReducerTest, HooksLaunchEveryBucketDuringBackward) {
  ProcessGroup& g = Group();
  HookedModel model(g);
  GradientReducer reducer(model.params, g, {.bucket_bytes = 1200});
  for (int step = 0; step < 2; ++step) {  // the hooks keep working after a step
    for (auto& p : model.params) p.mutable_grad() = at::Tensor();
    model.Backward(1.0);
    EXPECT_EQ(reducer.buckets_launched_during_backward(), 4u);
    reducer.AverageGradients();
    EXPECT_EQ(reducer.buckets_launched_during_backward(), 0u);
    for (int i = 0; i < 4; ++i) {
      EXPECT_TRUE(torch::allclose(model.params[i].grad(), torch::full({3, 100}, model.MeanOverRanks(i + 1.0))))
          << "step " << step << " param " << i;
    }
  }
}

TEST(GradientReducerTest, TimingCountsWhatBackwardHidAndRestartsWhenTaken) {
  ProcessGroup& g = Group();
  HookedModel model(g);
  GradientReducer reducer(model.params, g, {.bucket_bytes = 1200});
  for (int step = 0; step < 2; ++step) {
    for (auto& p : model.params) p.mutable_grad() = at::Tensor();
    model.Backward(1.0);
    reducer.AverageGradients();
  }
  const ReductionTiming timing = reducer.TakeTiming();
  EXPECT_EQ(timing.steps, 2);
  // Every bucket left during backward, before AverageGradients started: part of the time in
  // flight precedes the exposed part, so some of it was hidden.
  EXPECT_GT(timing.exposed_seconds, 0.0);
  EXPECT_LT(timing.exposed_seconds, timing.in_flight_seconds);
  EXPECT_GT(timing.HiddenFraction(), 0.0);
  EXPECT_LT(timing.HiddenFraction(), 1.0);
  const ReductionTiming again = reducer.TakeTiming();
  EXPECT_EQ(again.steps, 0);
  EXPECT_EQ(again.in_flight_seconds, 0.0);
  EXPECT_EQ(again.HiddenFraction(), 0.0);
}

TEST(GradientReducerTest, NothingIsHiddenWhenBackwardLaunchedNoBucket) {
  ProcessGroup& g = Group();
  HookedModel model(g);
  GradientReducer reducer(model.params, g, {.bucket_bytes = 1200});
  reducer.SetLaunchDuringBackward(false);  // as for every micro-batch but the last
  model.Backward(1.0);
  reducer.AverageGradients();
  const ReductionTiming timing = reducer.TakeTiming();
  EXPECT_EQ(timing.steps, 1);
  EXPECT_GT(timing.in_flight_seconds, 0.0);
  EXPECT_EQ(timing.exposed_seconds, timing.in_flight_seconds);
  EXPECT_EQ(timing.HiddenFraction(), 0.0);
}

TEST(GradientReducerTest, AccumulationLaunchesOnlyFromTheLastMicroBatch) {
  ProcessGroup& g = Group();
  HookedModel model(g);
  GradientReducer reducer(model.params, g, {.bucket_bytes = 1200});
  reducer.SetLaunchDuringBackward(false);
  model.Backward(1.0);
  EXPECT_EQ(reducer.buckets_launched_during_backward(), 0u);
  reducer.SetLaunchDuringBackward(true);
  model.Backward(2.0);  // accumulates onto the first micro-batch's gradients
  EXPECT_EQ(reducer.buckets_launched_during_backward(), 4u);
  reducer.AverageGradients();
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(torch::allclose(model.params[i].grad(), torch::full({3, 100}, model.MeanOverRanks(3.0 * (i + 1.0)))))
        << i;
  }
}

TEST(GradientReducerTest, BucketsLeaveInOrderWhenRanksReachDifferentParameters) {
  // Rank 0 gives param 1 no gradient: its bucket (the third: buckets run 3, 2, 1, 0) never
  // completes there, so rank 0 holds it and the last bucket back for AverageGradients while
  // rank 1 launches all four from hooks. Both still issue the collectives in one order.
  ProcessGroup& g = Group();
  HookedModel model(g);
  GradientReducer reducer(model.params, g, {.bucket_bytes = 1200});
  model.Backward(1.0, g.rank() == 0 ? std::vector<int>{1} : std::vector<int>{});
  EXPECT_EQ(reducer.buckets_launched_during_backward(), g.rank() == 0 ? 2u : 4u);
  reducer.AverageGradients();
  const double n = g.world_size();
  for (int i = 0; i < 4; ++i) {
    double expected = model.MeanOverRanks(i + 1.0);
    if (i == 1) expected -= (i + 1.0) / n;  // rank 0 sent zeros
    EXPECT_TRUE(torch::allclose(model.params[i].grad(), torch::full({3, 100}, expected))) << i;
  }
}

}  // namespace
}  // namespace dpo
