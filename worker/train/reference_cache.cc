#include "worker/train/reference_cache.h"

#include <filesystem>
#include <numeric>

#include <torch/torch.h>

#include "common/data/prepared_dataset.h"
#include "common/model/causal_lm.h"
#include "common/model/checkpoint_io.h"
#include "common/util/error.h"
#include "common/util/hash.h"
#include "worker/comm/process_group.h"
#include "worker/train/dpo_forward.h"
#include "worker/train/pair_batch.h"

namespace dpo {

std::string ReferenceCache::FileName(uint64_t reference_hash, const PreparedDataset& dataset,
                                     std::optional<double> ld_alpha) {
  Hasher h;
  h.Update(reference_hash).Update(dataset.tokenizer_hash()).Update(dataset.source_hash());
  h.Update(dataset.options_hash()).Update(static_cast<uint64_t>(dataset.size()));
  h.Update(ld_alpha ? std::to_string(*ld_alpha) : std::string("none"));
  return "ref-logps-" + h.HexDigest() + ".safetensors";
}

ReferenceCache ReferenceCache::LoadOrCompute(const std::string& path, CausalLM* reference,
                                             const PreparedDataset& dataset, ProcessGroup& group, int64_t batch_size,
                                             const CollateOptions& collate, bool packed,
                                             const SequenceLogpsOptions& logps_options,
                                             std::optional<double> ld_alpha) {
  ReferenceCache cache;
  const int64_t n = static_cast<int64_t>(dataset.size());
  // Every rank must take the same branch: agree on whether the file is usable.
  bool usable = false;
  if (std::filesystem::exists(path)) {
    try {
      CheckpointReader reader(path);
      cache.chosen_ = reader.Read("chosen", torch::kFloat);
      cache.rejected_ = reader.Read("rejected", torch::kFloat);
      usable = cache.chosen_.numel() == n && cache.rejected_.numel() == n;
    } catch (const std::exception&) {
      usable = false;  // a damaged cache is recomputed, not trusted
    }
  }
  const bool all_usable = group.AllReduceScalar(usable ? 1.0 : 0.0) == group.world_size();
  if (all_usable) return cache;

  if (reference == nullptr) Fail(path, "reference log-probs missing and no reference model");
  const c10::Device device = reference->lm_head_weight().device();
  at::Tensor both = torch::zeros({2, n}, torch::kFloat64);
  std::vector<uint32_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0u);
  const RankBatchPlan plan = PlanRankBatches(all, group.rank(), group.world_size(), static_cast<size_t>(batch_size));
  for (size_t b = 0; b < plan.batches.size(); ++b) {
    PairBatch batch = MakePairBatch(dataset, plan.batches[b], collate, device, packed);
    ReferenceLogps logps = ReferenceForward(*reference, batch, logps_options, ld_alpha);
    if (b >= plan.real) continue;  // a filler: keeps a sharded reference's collectives in step
    both[0].index_put_({batch.pair_indices}, logps.chosen.to(torch::kCPU, torch::kFloat64));
    both[1].index_put_({batch.pair_indices}, logps.rejected.to(torch::kCPU, torch::kFloat64));
  }
  // Each pair was scored by exactly one rank; elsewhere it is 0, so a sum gathers them all.
  group.AllReduceSum(both);
  cache.chosen_ = both[0].to(torch::kFloat).contiguous();
  cache.rejected_ = both[1].to(torch::kFloat).contiguous();
  cache.computed_ = true;
  if (group.rank() == 0) {
    WriteTensors(path, {{"chosen", cache.chosen_}, {"rejected", cache.rejected_}});
  }
  group.Barrier();
  return cache;
}

ReferenceLogps ReferenceCache::Lookup(const at::Tensor& pair_indices, c10::Device device) const {
  return {chosen_.index_select(0, pair_indices).to(device), rejected_.index_select(0, pair_indices).to(device)};
}

}  // namespace dpo
