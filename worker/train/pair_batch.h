// Turns preference pairs of a PreparedDataset into the tensors of one DPO forward pass. The 2B
// sequences (chosen first: [chosen_0..chosen_{B-1}, rejected_0..rejected_{B-1}]), each prompt +
// completion, are truncated by CollatePadded (common/data/batch.h) as TRL's collator does, then
// laid out one of two ways:
//   padded:  2B right-padded rows, as TRL's DataCollatorForPreference;
//   packed:  one unit per pair, packed first-fit-decreasing into rows (see PackedRows), so padding
//            costs little or no compute. A unit is the chosen sequence, then the rejected one
//            without the prefix it shares with the chosen (the prompt), attending to the chosen's
//            copy instead: the prompt goes through the model once per pair, not twice. Hidden
//            states are causal, so this changes no number beyond float rounding. Position ids
//            restart per sequence; `spans` say who attends to whom. unpack_index maps per-token
//            outputs back to the padded [2B, T-1] layout the loss expects (a shared position
//            feeds both sequences).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "common/data/batch.h"
#include "common/model/attention_span.h"

namespace dpo {

class PreparedDataset;

struct PairBatch {
  at::Tensor input_ids;        // [R, W] int64 (R = 2B when padded)
  at::Tensor completion_mask;  // [R, W] int64, 1 on completion tokens
  // Packed only (undefined when padded):
  at::Tensor position_ids;           // [R, W] int64
  std::vector<AttentionSpan> spans;  // tile every row: one per sequence part, one per padding tail
  // [2B, T-1] int64 into the flattened [R, W-1] per-token outputs; entries past a sequence's end
  // point at R*(W-1), one extra zero slot.
  at::Tensor unpack_index;
  at::Tensor completion_tokens;  // [2B] fp32: completion tokens per sequence after truncation
  at::Tensor pair_indices;       // [B] int64 on the CPU: dataset indices (reference look-ups)
  int64_t pairs = 0;
  int64_t real_tokens = 0;   // tokens of the 2B sequences (what tokens/s counts)
  int64_t cells = 0;         // R * W: the cells the forward pass computes
  int64_t filled_cells = 0;  // cells holding a token; a shared prompt fills its cells once
  bool packed() const { return !spans.empty(); }
};

// Width of packed rows: as wide as the longest unit, or one row for the whole batch. Default
// kAuto: one row on the CPU (attention runs per span there, so width costs nothing), the longest
// unit elsewhere (the GPU attends with one [R, 1, W, W] mask).
enum class PackedRows { kAuto, kLongestUnit, kOneRow };

PairBatch MakePairBatch(const PreparedDataset& dataset, std::span<const uint32_t> indices,
                        const CollateOptions& options, c10::Device device, bool packed = false,
                        PackedRows row_width = PackedRows::kAuto);

}  // namespace dpo

namespace dpo {

// This rank's share of `total` pairs dealt round-robin over `world` ranks (`pairs` lists the
// pair ids, in dealing order), in batches of `batch_size`, for a pass where every rank must run
// the same number of forwards (a sharded model's gathers are collective). The first
// ceil(share / batch_size) batches are this rank's pairs; repeats of `pairs[0]` follow until
// there are as many as the rank with the largest share has. Their results are to be ignored.
struct RankBatchPlan {
  std::vector<std::vector<uint32_t>> batches;
  size_t real = 0;  // batches [0, real) hold this rank's pairs; the rest are fillers
};
RankBatchPlan PlanRankBatches(std::span<const uint32_t> pairs, int64_t rank, int64_t world, size_t batch_size);

}  // namespace dpo
