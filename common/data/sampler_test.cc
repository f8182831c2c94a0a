#include "common/data/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "common/util/error.h"

namespace dpo {
namespace {

TEST(SamplerTest, SplitMix64KnownValuesAndUnbiasedRange) {
  // Reference outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
  SplitMix64 rng(0);
  EXPECT_EQ(rng.Next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(rng.Next(), 0x6e789e6aa1b965f4ULL);
  SplitMix64 r2(7);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(r2.Below(3), 3u);
}

TEST(SamplerTest, ShuffleIsAPermutationFixedBySeedAndEpoch) {
  auto a = ShuffledOrder(1000, 42, 0);
  EXPECT_EQ(a, ShuffledOrder(1000, 42, 0));
  EXPECT_NE(a, ShuffledOrder(1000, 42, 1));
  EXPECT_NE(a, ShuffledOrder(1000, 43, 0));
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (uint32_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  // Pinned against an independent Python model of SplitMix64 + Fisher-Yates: the order must
  // not change between builds, compilers or standard libraries.
  EXPECT_EQ(std::vector<uint32_t>(a.begin(), a.begin() + 6), (std::vector<uint32_t>{190, 486, 839, 625, 184, 719}));
  EXPECT_EQ(ShuffledOrder(10, 1, 2), (std::vector<uint32_t>{2, 3, 9, 0, 8, 5, 4, 6, 7, 1}));
}

TEST(SamplerTest, ShardsCoverEachKeptPairOnceInLockstep) {
  const size_t n = 1003;
  auto length = [](uint32_t i) { return static_cast<size_t>(i % 97); };
  for (bool grouped : {false, true}) {
    std::multiset<uint32_t> seen;
    size_t steps = 0;
    for (int rank = 0; rank < 4; ++rank) {
      SamplerOptions o;
      o.batch_size = 5, o.rank = rank, o.world_size = 4, o.group_by_length = grouped, o.mega_batch = 3;
      o.drop_last = true;
      auto batches = PlanEpoch(n, o, 3, length);
      if (rank == 0) steps = batches.size();
      EXPECT_EQ(batches.size(), steps);  // lockstep
      EXPECT_EQ(batches, PlanEpoch(n, o, 3, length));
      for (const auto& b : batches) {
        ASSERT_EQ(b.size(), 5u);
        seen.insert(b.begin(), b.end());
      }
    }
    EXPECT_EQ(steps, n / 20);
    EXPECT_EQ(seen.size(), steps * 20);
    EXPECT_EQ(std::set<uint32_t>(seen.begin(), seen.end()).size(), seen.size());  // no repeats
  }
  SamplerOptions bad;
  bad.rank = 2, bad.world_size = 2;
  EXPECT_THROW(PlanEpoch(10, bad, 0, length), Error);
}

TEST(SamplerTest, LengthGroupingMakesBatchesHomogeneous) {
  auto length = [](uint32_t i) { return static_cast<size_t>((i * 2654435761u) % 1000); };
  auto spread = [&](bool grouped) {
    SamplerOptions o;
    o.batch_size = 8, o.group_by_length = grouped;
    size_t total = 0;
    for (const auto& b : PlanEpoch(4096, o, 0, length)) {
      size_t lo = SIZE_MAX, hi = 0;
      for (uint32_t i : b) lo = std::min(lo, length(i)), hi = std::max(hi, length(i));
      total += hi - lo;
    }
    return total;
  };
  EXPECT_LT(spread(true) * 10, spread(false));
}

TEST(SamplerTest, WithoutShuffleBatchesFollowFileOrderAcrossRanks) {
  auto length = [](uint32_t) { return size_t{1}; };
  for (int rank = 0; rank < 2; ++rank) {
    SamplerOptions o;
    o.batch_size = 2, o.rank = rank, o.world_size = 2, o.shuffle = false, o.group_by_length = false;
    o.drop_last = true;
    auto batches = PlanEpoch(9, o, 5, length);
    ASSERT_EQ(batches.size(), 2u);  // 9 pairs, global batch 4: the last pair is dropped
    const uint32_t first = static_cast<uint32_t>(2 * rank);
    EXPECT_EQ(batches[0], (std::vector<uint32_t>{first, first + 1}));
    EXPECT_EQ(batches[1], (std::vector<uint32_t>{first + 4, first + 5}));
  }
}

TEST(SamplerTest, OneRankKeepsTheLastPartialBatch) {
  // torch's DataLoader with drop_last=False, as HF's Trainer uses it on one process.
  auto length = [](uint32_t i) { return static_cast<size_t>(i % 7); };
  SamplerOptions o;
  o.batch_size = 4, o.shuffle = false, o.group_by_length = false;
  auto batches = PlanEpoch(18, o, 0, length);
  ASSERT_EQ(batches.size(), 5u);
  EXPECT_EQ(batches[3], (std::vector<uint32_t>{12, 13, 14, 15}));
  EXPECT_EQ(batches[4], (std::vector<uint32_t>{16, 17}));
  for (bool grouped : {false, true}) {
    o.shuffle = true, o.group_by_length = grouped;
    std::multiset<uint32_t> seen;
    size_t partial = 0;
    for (const auto& b : PlanEpoch(18, o, 2, length)) {
      seen.insert(b.begin(), b.end());
      if (b.size() != 4) partial += b.size();
    }
    EXPECT_EQ(seen.size(), 18u);  // every pair once
    EXPECT_EQ(std::set<uint32_t>(seen.begin(), seen.end()).size(), 18u);
    EXPECT_EQ(partial, 2u);
  }
}

TEST(SamplerTest, SeveralRanksCompleteTheLastGlobalBatchFromTheStart) {
  // accelerate's even_batches: 9 pairs, 2 ranks of 2: a third global batch {8, 0, 1, 2}.
  auto length = [](uint32_t) { return size_t{1}; };
  const std::vector<std::vector<uint32_t>> last = {{8, 0}, {1, 2}};
  for (int rank = 0; rank < 2; ++rank) {
    SamplerOptions o;
    o.batch_size = 2, o.rank = rank, o.world_size = 2, o.shuffle = false, o.group_by_length = false;
    auto batches = PlanEpoch(9, o, 0, length);
    ASSERT_EQ(batches.size(), 3u);
    EXPECT_EQ(batches[2], last[static_cast<size_t>(rank)]);
  }
  // Fewer pairs than one global batch: the order repeats until it fills it.
  SamplerOptions o;
  o.batch_size = 4, o.rank = 1, o.world_size = 2, o.shuffle = false, o.group_by_length = false;
  EXPECT_EQ(PlanEpoch(3, o, 0, length), (std::vector<std::vector<uint32_t>>{{1, 2, 0, 1}}));
}

TEST(SamplerTest, TrainEvalSplitIsSeededDisjointAndPlansOverItsPool) {
  auto split = SplitTrainEval(1000, 0.1, 42);
  EXPECT_EQ(split.eval.size(), 100u);
  EXPECT_EQ(split.train.size(), 900u);
  std::set<uint32_t> all(split.train.begin(), split.train.end());
  all.insert(split.eval.begin(), split.eval.end());
  EXPECT_EQ(all.size(), 1000u);
  EXPECT_TRUE(std::is_sorted(split.eval.begin(), split.eval.end()));
  EXPECT_EQ(SplitTrainEval(1000, 0.1, 42).eval, split.eval);
  EXPECT_NE(SplitTrainEval(1000, 0.1, 43).eval, split.eval);
  EXPECT_TRUE(SplitTrainEval(10, 0.0, 1).eval.empty());
  EXPECT_THROW(SplitTrainEval(10, 1.0, 1), Error);

  SamplerOptions o;
  o.batch_size = 4;
  auto length = [](uint32_t i) { return static_cast<size_t>(i % 13); };
  auto batches = PlanEpoch(std::span<const uint32_t>(split.train), o, 0, length);
  EXPECT_EQ(batches.size(), 900u / 4);
  std::set<uint32_t> eval(split.eval.begin(), split.eval.end()), seen;
  for (const auto& b : batches) {
    for (uint32_t i : b) {
      EXPECT_FALSE(eval.count(i));
      EXPECT_TRUE(seen.insert(i).second);
    }
  }
}

}  // namespace
}  // namespace dpo
