#include "common/data/preference_reader.h"

#include "common/data/line_reader.h"

namespace dpo {

OnError ParseOnError(const std::string& name) {
  if (name == "fail") return OnError::kFail;
  if (name == "skip") return OnError::kSkip;
  Fail("on_error", "expected \"fail\" or \"skip\", got \"" + name + "\"");
}

void DataReport::AddSkipped(const RecordError& error) {
  ++skipped;
  ++skipped_by_reason[RecordErrorName(error.kind())];
  if (first_messages.size() < kMaxMessages) first_messages.emplace_back(error.what());
}

void DataReport::Merge(const DataReport& other) {
  lines += other.lines;
  pairs += other.pairs;
  skipped += other.skipped;
  dropped += other.dropped;
  for (const auto& [reason, count] : other.skipped_by_reason) skipped_by_reason[reason] += count;
  for (const auto& message : other.first_messages) {
    if (first_messages.size() < kMaxMessages) first_messages.push_back(message);
  }
}

std::string DataReport::Summary() const {
  std::string text = std::to_string(lines) + " lines, " + std::to_string(pairs) + " pairs kept, " +
                     std::to_string(skipped) + " skipped";
  if (!skipped_by_reason.empty()) {
    text += " (";
    bool first = true;
    for (const auto& [reason, count] : skipped_by_reason) {
      text += (first ? "" : ", ") + reason + ": " + std::to_string(count);
      first = false;
    }
    text += ")";
  }
  text += ", " + std::to_string(dropped) + " dropped (too long)";
  return text;
}

bool IsBlankLine(std::string_view line) { return line.find_first_not_of(" \t\r") == std::string::npos; }

}  // namespace dpo
