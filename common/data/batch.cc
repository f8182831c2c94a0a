#include "common/data/batch.h"

#include <algorithm>

namespace dpo {
namespace {

// Calls emit(token, is_completion) for each kept token of prompt+completion, in order.
template <typename Emit>
size_t EmitSequence(std::span<const int32_t> prompt, std::span<const int32_t> completion, const CollateOptions& options,
                    Emit&& emit) {
  size_t total = prompt.size() + completion.size();
  size_t keep = TruncatedLength(prompt.size(), completion.size(), options);
  size_t first = options.truncation_mode == TruncationMode::kKeepEnd ? total - keep : 0;
  for (size_t i = first; i < first + keep; ++i) {
    if (i < prompt.size()) {
      emit(prompt[i], false);
    } else {
      emit(completion[i - prompt.size()], true);
    }
  }
  return keep;
}

template <typename Fn>
void ForEachSequence(const PreparedDataset& data, std::span<const uint32_t> pairs, Fn&& fn) {
  for (int side = 0; side < 2; ++side) {
    for (uint32_t index : pairs) {
      PreparedDataset::Pair p = data.pair(index);
      fn(p.prompt, side == 0 ? p.chosen : p.rejected);
    }
  }
}

}  // namespace

size_t TruncatedLength(size_t prompt, size_t completion, const CollateOptions& options) {
  size_t total = prompt + completion;
  return options.max_length ? std::min(total, options.max_length) : total;
}

size_t PaddedBatch::real_tokens() const {
  size_t n = 0;
  for (int32_t len : lengths) n += static_cast<size_t>(len);
  return n;
}

double PaddedBatch::padding_fraction() const {
  size_t cells = rows * width;
  return cells ? static_cast<double>(cells - real_tokens()) / static_cast<double>(cells) : 0.0;
}

PaddedBatch CollatePadded(const PreparedDataset& data, std::span<const uint32_t> pairs, const CollateOptions& options) {
  PaddedBatch batch;
  batch.rows = 2 * pairs.size();
  ForEachSequence(data, pairs, [&](auto prompt, auto completion) {
    batch.lengths.push_back(static_cast<int32_t>(TruncatedLength(prompt.size(), completion.size(), options)));
  });
  size_t width =
      batch.lengths.empty() ? 0 : static_cast<size_t>(*std::max_element(batch.lengths.begin(), batch.lengths.end()));
  if (options.pad_to_multiple_of > 1) {
    width = (width + options.pad_to_multiple_of - 1) / options.pad_to_multiple_of * options.pad_to_multiple_of;
  }
  batch.width = width;
  batch.input_ids.assign(batch.rows * width, options.pad_id);
  batch.completion_mask.assign(batch.rows * width, 0);
  size_t row = 0;
  ForEachSequence(data, pairs, [&](auto prompt, auto completion) {
    size_t col = 0;
    EmitSequence(prompt, completion, options, [&](int32_t token, bool is_completion) {
      batch.input_ids[row * width + col] = token;
      batch.completion_mask[row * width + col] = is_completion;
      ++col;
    });
    ++row;
  });
  return batch;
}

}  // namespace dpo
