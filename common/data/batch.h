// Collation of B preference pairs into what the trainer feeds the model, torch-free
// (std::vector; the trainer wraps the buffers in tensors, and packs them when padding-free:
// worker/train/pair_batch.h):
//
//   PaddedBatch  2B rows, chosen sequences first then rejected (row i and row B+i are pair i),
//                each prompt+completion cut to max_length as TRL's DataCollatorForPreference
//                (keep_start: first max_length tokens; keep_end: last), right-padded to T.
//
// completion_mask is 1 exactly on completion tokens (the labels that count), as TRL's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/data/pair_tokenizer.h"
#include "common/data/prepared_dataset.h"

namespace dpo {

struct CollateOptions {
  // Per-sequence limit; 0 = none. Default 1024, as TokenizeOptions (use the same value).
  size_t max_length = 1024;
  TruncationMode truncation_mode = TruncationMode::kKeepStart;  // Default keep_start.
  int64_t pad_id = 0;  // Padding token id (the tokenizer's pad, else EOS). Default 0.
  // Round T up to a multiple of this (tensor-core friendly shapes). 0/1 = off. Default 0.
  size_t pad_to_multiple_of = 0;
};

struct PaddedBatch {
  size_t rows = 0;                       // 2B
  size_t width = 0;                      // T
  std::vector<int64_t> input_ids;        // [rows, width], pad_id past each length
  std::vector<uint8_t> completion_mask;  // [rows, width]
  std::vector<int32_t> lengths;          // [rows]: real tokens per row (attention mask = i < length)
  size_t real_tokens() const;
  // Share of the [rows, width] cells that are padding.
  double padding_fraction() const;
};

PaddedBatch CollatePadded(const PreparedDataset& data, std::span<const uint32_t> pairs, const CollateOptions& options);

// Length of one side's sequence after the max_length cut.
size_t TruncatedLength(size_t prompt, size_t completion, const CollateOptions& options);

}  // namespace dpo
