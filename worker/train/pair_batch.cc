#include "worker/train/pair_batch.h"

#include <torch/torch.h>

#include "common/data/prepared_dataset.h"

namespace dpo {

PairBatch MakePairBatch(const PreparedDataset& dataset, std::span<const uint32_t> indices,
                        const CollateOptions& options, c10::Device device) {
  PaddedBatch padded = CollatePadded(dataset, indices, options);
  const auto rows = static_cast<int64_t>(padded.rows);
  const auto width = static_cast<int64_t>(padded.width);
  PairBatch batch;
  // from_blob borrows the vectors' memory: copy=true makes the tensors own theirs.
  batch.input_ids = torch::from_blob(padded.input_ids.data(), {rows, width}, torch::kInt64)
                        .to(device, torch::kInt64, /*non_blocking=*/false, /*copy=*/true);
  batch.completion_mask = torch::from_blob(padded.completion_mask.data(), {rows, width}, torch::kUInt8)
                              .to(device, torch::kInt64, /*non_blocking=*/false, /*copy=*/true);
  batch.pair_indices = torch::empty({static_cast<int64_t>(indices.size())}, torch::kInt64);
  for (size_t i = 0; i < indices.size(); ++i) batch.pair_indices[i] = static_cast<int64_t>(indices[i]);
  batch.pairs = static_cast<int64_t>(indices.size());
  batch.real_tokens = static_cast<int64_t>(padded.real_tokens());
  batch.padded_tokens = rows * width;
  return batch;
}

}  // namespace dpo
