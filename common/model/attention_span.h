// How the tokens of a packed row attend (padding-free batches), torch-free so batch builders can
// describe a layout without the model's headers.
#pragma once

#include <cstdint>

namespace dpo {

// A run of tokens [offset, offset + length) of one row that attends causally within itself and to
// every token of [prefix_offset, prefix_offset + prefix_length) of the same row: a prompt shared
// with an earlier span, which must end at or before `offset`. prefix_length 0: no prefix.
struct AttentionSpan {
  int64_t row = 0, offset = 0, length = 0;
  int64_t prefix_offset = 0, prefix_length = 0;
};

}  // namespace dpo
