#include "common/data/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "common/util/error.h"

namespace dpo {

uint64_t SplitMix64::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::Below(uint64_t bound) {
  // Reject the top partial range so every residue is equally likely.
  uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t x;
  do {
    x = Next();
  } while (x >= limit);
  return x % bound;
}

std::vector<uint32_t> ShuffledOrder(size_t n, uint64_t seed, uint64_t epoch) {
  std::vector<uint32_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = static_cast<uint32_t>(i);
  SplitMix64 rng(seed * 0x9e3779b97f4a7c15ULL ^ (epoch + 1) * 0xd1b54a32d192ed03ULL);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.Below(i)]);
  return order;
}

TrainEvalSplit SplitTrainEval(size_t num_pairs, double eval_fraction, uint64_t seed) {
  if (!(eval_fraction >= 0 && eval_fraction < 1)) {
    Fail("eval_fraction", "must be in [0, 1), got " + std::to_string(eval_fraction));
  }
  // The eval pairs are the first ones of a shuffle on a stream no epoch uses.
  auto order = ShuffledOrder(num_pairs, seed ^ 0x65766131ULL, UINT64_MAX);
  // llround: truncating x + 0.5 is not round(x), as the sum itself rounds (0.49999999999999994
  // + 0.5 is 1).
  const auto eval = static_cast<size_t>(std::llround(static_cast<double>(num_pairs) * eval_fraction));
  TrainEvalSplit split;
  split.eval.assign(order.begin(), order.begin() + eval);
  split.train.assign(order.begin() + eval, order.end());
  std::sort(split.eval.begin(), split.eval.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

std::vector<std::vector<uint32_t>> PlanEpoch(size_t num_pairs, const SamplerOptions& o, uint64_t epoch,
                                             const std::function<size_t(uint32_t)>& length) {
  std::vector<uint32_t> all(num_pairs);
  for (size_t i = 0; i < num_pairs; ++i) all[i] = static_cast<uint32_t>(i);
  return PlanEpoch(std::span<const uint32_t>(all), o, epoch, length);
}

std::vector<std::vector<uint32_t>> PlanEpoch(std::span<const uint32_t> pool, const SamplerOptions& o, uint64_t epoch,
                                             const std::function<size_t(uint32_t)>& length) {
  const size_t num_pairs = pool.size();
  if (o.batch_size == 0) Fail("sampler", "batch_size must be > 0");
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    Fail("sampler", "rank " + std::to_string(o.rank) + " is outside world_size " + std::to_string(o.world_size));
  }
  std::vector<uint32_t> order(pool.begin(), pool.end());
  if (o.shuffle) {
    std::vector<uint32_t> permutation = ShuffledOrder(num_pairs, o.seed, epoch);
    for (size_t i = 0; i < num_pairs; ++i) order[i] = pool[permutation[i]];
  }
  const size_t global = o.batch_size * static_cast<size_t>(o.world_size);
  const size_t num_batches = o.drop_last ? num_pairs / global : (num_pairs + global - 1) / global;
  if (o.drop_last) {
    order.resize(num_batches * global);
  } else if (o.world_size > 1) {
    // accelerate's even_batches: complete the last global batch from the start of the order.
    order.reserve(num_batches * global);
    for (size_t i = num_pairs; i < num_batches * global; ++i) order.push_back(order[i - num_pairs]);
  }  // else one rank: the last batch is cut short below
  if (o.group_by_length) {
    size_t window = global * std::max<size_t>(1, o.mega_batch);
    for (size_t start = 0; start < order.size(); start += window) {
      auto first = order.begin() + start;
      auto last = order.begin() + std::min(order.size(), start + window);
      std::stable_sort(first, last, [&](uint32_t a, uint32_t b) { return length(a) > length(b); });
    }
  }
  // Batch order: shuffled with a stream independent of the pair shuffle.
  std::vector<uint32_t> batch_order = ShuffledOrder(num_batches, o.seed ^ 0x5bd1e995ULL, epoch);
  if (!o.group_by_length) {
    for (size_t i = 0; i < num_batches; ++i) batch_order[i] = static_cast<uint32_t>(i);
  }
  std::vector<std::vector<uint32_t>> batches;
  batches.reserve(num_batches);
  for (uint32_t b : batch_order) {
    const size_t first = b * global + static_cast<size_t>(o.rank) * o.batch_size;
    const size_t last = std::min(order.size(), first + o.batch_size);
    batches.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(first),
                         order.begin() + static_cast<std::ptrdiff_t>(last));
  }
  return batches;
}

}  // namespace dpo
