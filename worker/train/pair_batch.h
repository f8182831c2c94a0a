// Turns preference pairs of a PreparedDataset into the tensors of one DPO forward pass:
// 2B right-padded rows, chosen rows first ([chosen_0..chosen_{B-1}, rejected_0..rejected_{B-1}]),
// each prompt + completion, truncated and padded by CollatePadded (common/data/batch.h) as TRL's
// DataCollatorForPreference does.
#pragma once

#include <cstdint>
#include <span>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "common/data/batch.h"

namespace dpo {

class PreparedDataset;

struct PairBatch {
  at::Tensor input_ids;        // [2B, T] int64, padded with the pad id
  at::Tensor completion_mask;  // [2B, T] int64, 1 on completion tokens
  at::Tensor pair_indices;     // [B] int64 on the CPU: dataset indices (reference look-ups)
  int64_t pairs = 0;
  int64_t real_tokens = 0;     // non-pad tokens
  int64_t padded_tokens = 0;   // 2B * T
};

PairBatch MakePairBatch(const PreparedDataset& dataset, std::span<const uint32_t> indices,
                        const CollateOptions& options, c10::Device device);

}  // namespace dpo
