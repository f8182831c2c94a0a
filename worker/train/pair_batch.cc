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

// Tokens the two sequences of a pair may share: their common prefix (same ids, same completion
// mask) less its last token, which each side keeps so that its first own label is still predicted
// from the cell before it.
int64_t SharedPrefix(const PaddedBatch& padded, int64_t chosen, int64_t rejected) {
  const auto width = static_cast<int64_t>(padded.width);
  const int64_t limit = std::min(padded.lengths[chosen], padded.lengths[rejected]);
  int64_t same = 0;
  while (same < limit && padded.input_ids[chosen * width + same] == padded.input_ids[rejected * width + same] &&
         padded.completion_mask[chosen * width + same] == padded.completion_mask[rejected * width + same]) {
    ++same;
  }
  return std::max<int64_t>(same - 1, 0);
}

void Pack(const PaddedBatch& padded, const CollateOptions& options, c10::Device device, PackedRows row_width,
          PairBatch& batch) {
  const auto sequences = static_cast<int64_t>(padded.rows);
  const int64_t pairs = sequences / 2;
  const auto padded_width = static_cast<int64_t>(padded.width);
  std::vector<int64_t> shared(static_cast<size_t>(pairs)), unit_length(shared.size());
  int64_t longest = 1, total = 0;
  for (int64_t p = 0; p < pairs; ++p) {
    shared[p] = SharedPrefix(padded, p, pairs + p);
    unit_length[p] = padded.lengths[p] + padded.lengths[pairs + p] - shared[p];
    longest = std::max(longest, unit_length[p]);
    total += unit_length[p];
  }
  const bool one_row = row_width == PackedRows::kOneRow || (row_width == PackedRows::kAuto && device.is_cpu());
  int64_t width = one_row ? std::max<int64_t>(total, 1) : longest;
  if (const auto multiple = static_cast<int64_t>(options.pad_to_multiple_of); multiple > 1) {
    width = (width + multiple - 1) / multiple * multiple;
  }
  // First-fit decreasing: units_of[row] lists a row's units left to right.
  std::vector<int64_t> order(shared.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return unit_length[a] > unit_length[b]; });
  std::vector<int64_t> fill;
  std::vector<std::vector<int64_t>> units_of;
  for (int64_t p : order) {
    size_t row = 0;
    while (row < fill.size() && fill[row] + unit_length[p] > width) ++row;
    if (row == fill.size()) {
      fill.push_back(0);
      units_of.emplace_back();
    }
    units_of[row].push_back(p);
    fill[row] += unit_length[p];
  }
  const auto rows = static_cast<int64_t>(fill.size());
  at::Tensor ids = torch::zeros({rows, width}, torch::kInt64);
  at::Tensor mask = torch::zeros({rows, width}, torch::kInt64);
  at::Tensor positions = torch::zeros({rows, width}, torch::kInt64);
  const int64_t zero_slot = rows * (width - 1);
  at::Tensor unpack = torch::full({sequences, std::max<int64_t>(padded_width - 1, 0)}, zero_slot, torch::kInt64);
  at::Tensor completion_tokens = torch::zeros({sequences}, torch::kFloat);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  auto pos_a = positions.accessor<int64_t, 2>();
  auto unpack_a = unpack.accessor<int64_t, 2>();
  // Copies tokens [from, length) of sequence s to row r at offset o; its position j < from are
  // read from the cells at `prefix_at` instead.
  auto place = [&](int64_t s, int64_t r, int64_t o, int64_t from, int64_t prefix_at) {
    const int64_t length = padded.lengths[s];
    int64_t completion = 0;
    for (int64_t j = 0; j < length; ++j) completion += padded.completion_mask[s * padded_width + j];
    completion_tokens[s] = static_cast<float>(completion);
    for (int64_t j = from; j < length; ++j) {
      const size_t cell = static_cast<size_t>(s * padded_width + j);
      const int64_t c = o + j - from;
      ids_a[r][c] = padded.input_ids[cell];
      // A span's first token has no predictor inside the span: never score it from the previous
      // span's last token.
      mask_a[r][c] = j == from ? 0 : padded.completion_mask[cell];
      pos_a[r][c] = j;
    }
    for (int64_t j = 0; j + 1 < length; ++j) {
      unpack_a[s][j] = r * (width - 1) + (j < from ? prefix_at + j : o + j - from);
    }
    if (length > from) batch.spans.push_back({r, o, length - from, prefix_at, from});
  };
  for (int64_t r = 0; r < rows; ++r) {
    int64_t o = 0;
    for (int64_t p : units_of[r]) {
      place(p, r, o, 0, 0);
      place(pairs + p, r, o + padded.lengths[p], shared[p], o);
      o += unit_length[p];
    }
    // Padding tails hold id 0 (any valid id works) and are never scored.
    if (o < width) batch.spans.push_back({r, o, width - o, 0, 0});
    batch.filled_cells += o;
  }
  batch.input_ids = ToDevice(ids, device);
  batch.completion_mask = ToDevice(mask, device);
  batch.position_ids = ToDevice(positions, device);
  batch.unpack_index = ToDevice(unpack, device);
  batch.completion_tokens = ToDevice(completion_tokens, device);
  batch.cells = rows * width;
}

}  // namespace

PairBatch MakePairBatch(const PreparedDataset& dataset, std::span<const uint32_t> indices,
                        const CollateOptions& options, c10::Device device, bool packed, PackedRows row_width) {
  PaddedBatch padded = CollatePadded(dataset, indices, options);
  const auto rows = static_cast<int64_t>(padded.rows);
  const auto width = static_cast<int64_t>(padded.width);
  PairBatch batch;
  batch.pair_indices = torch::empty({static_cast<int64_t>(indices.size())}, torch::kInt64);
  for (size_t i = 0; i < indices.size(); ++i) batch.pair_indices[i] = static_cast<int64_t>(indices[i]);
  batch.pairs = static_cast<int64_t>(indices.size());
  batch.real_tokens = static_cast<int64_t>(padded.real_tokens());
  if (packed) {
    Pack(padded, options, device, row_width, batch);
    return batch;
  }
  // from_blob borrows the vectors' memory: ToDevice copies.
  batch.input_ids = ToDevice(torch::from_blob(padded.input_ids.data(), {rows, width}, torch::kInt64), device);
  batch.completion_mask =
      ToDevice(torch::from_blob(padded.completion_mask.data(), {rows, width}, torch::kUInt8).to(torch::kInt64), device);
  batch.completion_tokens = batch.completion_mask.sum(1).to(torch::kFloat);
  batch.cells = rows * width;
  batch.filled_cells = batch.real_tokens;
  return batch;
}

}  // namespace dpo

namespace dpo {

RankBatchPlan PlanRankBatches(std::span<const uint32_t> pairs, int64_t rank, int64_t world, size_t batch_size) {
  RankBatchPlan plan;
  std::vector<uint32_t> mine;
  for (size_t i = static_cast<size_t>(rank); i < pairs.size(); i += static_cast<size_t>(world)) {
    mine.push_back(pairs[i]);
  }
  for (size_t start = 0; start < mine.size(); start += batch_size) {
    const size_t count = std::min(batch_size, mine.size() - start);
    plan.batches.emplace_back(mine.begin() + static_cast<std::ptrdiff_t>(start),
                              mine.begin() + static_cast<std::ptrdiff_t>(start + count));
  }
  plan.real = plan.batches.size();
  // Rank 0 has the largest share: ceil(|pairs| / world) pairs.
  const size_t largest_share = (pairs.size() + static_cast<size_t>(world) - 1) / static_cast<size_t>(world);
  const size_t rounds = (largest_share + batch_size - 1) / batch_size;
  while (plan.batches.size() < rounds) plan.batches.push_back({pairs[0]});
  return plan;
}

}  // namespace dpo
