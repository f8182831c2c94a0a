// The order in which a rank sees pairs: a deterministic shuffle by (seed, epoch), sharding
// across ranks and (optionally) length-grouped batches.
//
// Epoch plan (identical on every rank, so ranks agree without talking):
//   1. permute all N pairs with Fisher-Yates driven by SplitMix64 seeded from (seed, epoch);
//      the bounded draws are our own (rejection sampling), so the order is the same with any
//      compiler or standard library;
//   2. the pairs left over after the last full global batch of B * world pairs, as HF's Trainer
//      (transformers 5 + accelerate) treats them:
//        drop_last:            dropped: each kept pair is seen once per epoch; the < B*world left
//                              over differ each epoch (they follow the shuffle);
//        kept, one rank:       they form a last, partial batch (torch's DataLoader);
//        kept, world > 1:      the order is extended cyclically from its start until it fills
//                              whole global batches (accelerate's even_batches), so every rank
//                              takes the same number of full batches (lockstep collectives) and
//                              the first pairs of the epoch are seen twice;
//   3. cut into global batches of B * world pairs; with group_by_length, first sort each window
//      of `mega_batch` global batches by sequence length (longest first), cut, then shuffle the
//      batch order: batches hold similar lengths (little padding) while their order stays random;
//   4. rank r takes pairs [r*B, (r+1)*B) of every global batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace dpo {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  // Uniform in [0, bound) without modulo bias. bound > 0.
  uint64_t Below(uint64_t bound);

 private:
  uint64_t state_;
};

// A permutation of [0, n) that depends only on (seed, epoch).
std::vector<uint32_t> ShuffledOrder(size_t n, uint64_t seed, uint64_t epoch);

struct SamplerOptions {
  // Pairs per rank per step. Default 8.
  size_t batch_size = 8;
  int rank = 0;        // this process's rank in [0, world_size). Default 0.
  int world_size = 1;  // Default 1.
  uint64_t seed = 42;  // Default 42 (TRL/transformers' default seed).
  // Shuffle the pairs each epoch. false keeps file order (HF train_sampling_strategy
  // "sequential"; reproducing another trainer's batches exactly). Default true.
  bool shuffle = true;
  // Sort by length inside windows of global batches, then shuffle the batches. Default true.
  bool group_by_length = true;
  // Global batches per sorting window: larger = less padding, less randomness. Default 64.
  size_t mega_batch = 64;
  // Drop the pairs that do not fill a last global batch (see step 2 above). Default false, as
  // HF's dataloader_drop_last, so that a run trains on what TRL trains on.
  bool drop_last = false;
};

// A seeded split of [0, num_pairs) into train and eval pairs (data.eval_fraction): eval holds
// round(num_pairs * eval_fraction) pairs. Both lists are in file order; the split does not change
// with the epoch. Throws dpo::Error unless 0 <= eval_fraction < 1.
struct TrainEvalSplit {
  std::vector<uint32_t> train, eval;
};
TrainEvalSplit SplitTrainEval(size_t num_pairs, double eval_fraction, uint64_t seed);

// This rank's batches (pair indices) for `epoch`. length(i) gives pair i's sequence length
// (used only with group_by_length). Throws dpo::Error on bad options.
std::vector<std::vector<uint32_t>> PlanEpoch(size_t num_pairs, const SamplerOptions& options, uint64_t epoch,
                                             const std::function<size_t(uint32_t)>& length);
// The same over a subset of the pairs (e.g. TrainEvalSplit::train): `pool` takes the place of
// [0, num_pairs) and the batches hold its elements.
std::vector<std::vector<uint32_t>> PlanEpoch(std::span<const uint32_t> pool, const SamplerOptions& options,
                                             uint64_t epoch, const std::function<size_t(uint32_t)>& length);

}  // namespace dpo
