// The error policy for bad lines of a preference file, and the report of what was skipped
// (the prepare step, prepared_dataset.h, applies them).
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/data/preference_record.h"

namespace dpo {

// What a bad line does. File-level faults (unreadable file, truncated or corrupt gzip) always
// fail: a partial read must never pass for a complete dataset.
enum class OnError {
  kFail,  // throw the line's RecordError (file:line: field: what)
  kSkip,  // drop the line and count it in the DataReport
};
OnError ParseOnError(const std::string& name);  // "fail" | "skip"; throws dpo::Error otherwise

struct DataReport {
  static constexpr size_t kMaxMessages = 5;
  size_t lines = 0;                                 // non-blank lines read
  size_t pairs = 0;                                 // pairs kept
  size_t skipped = 0;                               // bad lines skipped under OnError::kSkip
  size_t dropped = 0;                               // well-formed pairs that cannot fit max_length (pair_tokenizer.h)
  std::map<std::string, size_t> skipped_by_reason;  // RecordErrorName -> count
  std::vector<std::string> first_messages;          // the first kMaxMessages error messages

  void AddSkipped(const RecordError& error);
  void Merge(const DataReport& other);  // other's lines come after this one's
  std::string Summary() const;          // one human-readable line
};

// Blank (whitespace-only) lines are ignored, as JSON readers do with a trailing newline.
bool IsBlankLine(std::string_view line);

}  // namespace dpo
