#include "worker/train/pair_batch.h"

#include <algorithm>
#include <numeric>

#include <torch/torch.h>

#include "common/data/prepared_dataset.h"

namespace dpo {
namespace {

at::Tensor ToDevice(at::Tensor cpu, c10::Device device) {
  return cpu.to(device, cpu.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
}

// Packs the padded rows into as few rows of the padded width as first-fit-decreasing finds.
void Pack(const PaddedBatch& padded, c10::Device device, PairBatch& batch) {
  const auto sequences = static_cast<int64_t>(padded.rows);
  const auto width = static_cast<int64_t>(padded.width);
  std::vector<int64_t> order(static_cast<size_t>(sequences));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return padded.lengths[a] > padded.lengths[b]; });
  std::vector<int64_t> row_of(order.size()), offset_of(order.size()), fill;
  for (int64_t s : order) {
    const int64_t length = padded.lengths[s];
    size_t row = 0;
    while (row < fill.size() && fill[row] + length > width) ++row;
    if (row == fill.size()) fill.push_back(0);
    row_of[s] = static_cast<int64_t>(row);
    offset_of[s] = fill[row];
    fill[row] += length;
  }
  const auto rows = static_cast<int64_t>(fill.size());
  at::Tensor ids = torch::zeros({rows, width}, torch::kInt64);
  at::Tensor mask = torch::zeros({rows, width}, torch::kInt64);
  at::Tensor positions = torch::zeros({rows, width}, torch::kInt64);
  // Padding tails get segment ids past every sequence's, one per row.
  at::Tensor segments = sequences + torch::arange(rows, torch::kInt64).unsqueeze(1).repeat({1, width});
  const int64_t zero_slot = rows * (width - 1);
  at::Tensor unpack = torch::full({sequences, std::max<int64_t>(width - 1, 0)}, zero_slot, torch::kInt64);
  at::Tensor completion_tokens = torch::zeros({sequences}, torch::kFloat);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  auto pos_a = positions.accessor<int64_t, 2>();
  auto seg_a = segments.accessor<int64_t, 2>();
  auto unpack_a = unpack.accessor<int64_t, 2>();
  for (int64_t s = 0; s < sequences; ++s) {
    const int64_t r = row_of[s], o = offset_of[s], length = padded.lengths[s];
    int64_t completion = 0;
    for (int64_t j = 0; j < length; ++j) {
      const size_t cell = static_cast<size_t>(s * width + j);
      ids_a[r][o + j] = padded.input_ids[cell];
      // A sequence's first token has no predictor inside its own sequence: never score it
      // from the previous sequence's last token.
      mask_a[r][o + j] = j == 0 ? 0 : padded.completion_mask[cell];
      completion += padded.completion_mask[cell];
      pos_a[r][o + j] = j;
      seg_a[r][o + j] = s;
      if (j + 1 < length) unpack_a[s][j] = r * (width - 1) + o + j;
    }
    completion_tokens[s] = static_cast<float>(completion);
  }
  // Padding tails hold id 0: any valid id works, they are never scored.
  batch.input_ids = ToDevice(ids, device);
  batch.completion_mask = ToDevice(mask, device);
  batch.position_ids = ToDevice(positions, device);
  batch.segment_ids = ToDevice(segments, device);
  batch.unpack_index = ToDevice(unpack, device);
  batch.completion_tokens = ToDevice(completion_tokens, device);
  batch.padded_tokens = rows * width;
}

}  // namespace

PairBatch MakePairBatch(const PreparedDataset& dataset, std::span<const uint32_t> indices,
                        const CollateOptions& options, c10::Device device, bool packed) {
  PaddedBatch padded = CollatePadded(dataset, indices, options);
  const auto rows = static_cast<int64_t>(padded.rows);
  const auto width = static_cast<int64_t>(padded.width);
  PairBatch batch;
  batch.pair_indices = torch::empty({static_cast<int64_t>(indices.size())}, torch::kInt64);
  for (size_t i = 0; i < indices.size(); ++i) batch.pair_indices[i] = static_cast<int64_t>(indices[i]);
  batch.pairs = static_cast<int64_t>(indices.size());
  batch.real_tokens = static_cast<int64_t>(padded.real_tokens());
  if (packed) {
    Pack(padded, device, batch);
    return batch;
  }
  // from_blob borrows the vectors' memory: ToDevice copies.
  batch.input_ids = ToDevice(torch::from_blob(padded.input_ids.data(), {rows, width}, torch::kInt64), device);
  batch.completion_mask = ToDevice(
      torch::from_blob(padded.completion_mask.data(), {rows, width}, torch::kUInt8).to(torch::kInt64), device);
  batch.completion_tokens = batch.completion_mask.sum(1).to(torch::kFloat);
  batch.padded_tokens = rows * width;
  return batch;
}

}  // namespace dpo
