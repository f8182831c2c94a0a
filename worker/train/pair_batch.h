// Turns preference pairs of a PreparedDataset into the tensors of one DPO forward pass. The 2B
// sequences (chosen first: [chosen_0..chosen_{B-1}, rejected_0..rejected_{B-1}]), each prompt +
// completion, are truncated by CollatePadded (common/data/batch.h) as TRL's collator does, then
// laid out one of two ways:
//   padded:  2B right-padded rows, as TRL's DataCollatorForPreference;
//   packed:  the sequences packed first-fit-decreasing into rows as wide as the longest one, with
//            position ids restarting per sequence and segment ids that keep attention inside each
//            sequence, so padding costs no compute. unpack_index maps per-token outputs back to
//            the padded [2B, T-1] layout the loss expects.
#pragma once

#include <cstdint>
#include <span>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "common/data/batch.h"

namespace dpo {

class PreparedDataset;

struct PairBatch {
  at::Tensor input_ids;        // [R, W] int64 (R = 2B when padded)
  at::Tensor completion_mask;  // [R, W] int64, 1 on completion tokens
  // Packed only (undefined when padded):
  at::Tensor position_ids;     // [R, W] int64
  at::Tensor segment_ids;      // [R, W] int64: one id per sequence, one per row's padding tail
  // [2B, T-1] int64 into the flattened [R, W-1] per-token outputs; entries past a sequence's end
  // point at R*(W-1), one extra zero slot.
  at::Tensor unpack_index;
  at::Tensor completion_tokens;  // [2B] fp32: completion tokens per sequence after truncation
  at::Tensor pair_indices;       // [B] int64 on the CPU: dataset indices (reference look-ups)
  int64_t pairs = 0;
  int64_t real_tokens = 0;       // non-pad tokens
  int64_t padded_tokens = 0;     // R * W: the cells the forward pass computes
  bool packed() const { return segment_ids.defined(); }
};

PairBatch MakePairBatch(const PreparedDataset& dataset, std::span<const uint32_t> indices,
                        const CollateOptions& options, c10::Device device, bool packed = false);

}  // namespace dpo
