// Fuzzes the preference JSONL record parser (every line of the input), the implicit-prompt split
// and the native chat templates. An input that starts with the gzip magic is also read through
// LineReader, and one that starts with "DPOPREP" is loaded as a prepared dataset (both from an
// in-memory file); their only allowed failure is dpo::Error, and a loaded dataset's pairs must
// lie inside its tokens. Bad lines may only raise RecordError; the invariants below must hold for
// everything that parses.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/data/chat_template.h"
#include "common/data/line_reader.h"
#include "common/data/preference_record.h"
#include "common/data/prepared_dataset.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckSplit(std::string_view a, std::string_view b) {
  size_t cut = dpo::ExtractTextPrompt(a, b);
  Check(cut <= a.size() && cut <= b.size() && a.substr(0, cut) == b.substr(0, cut));
  // The cut never falls inside a UTF-8 sequence of valid text.
  if (dpo::FindInvalidUtf8(a) == std::string_view::npos && cut < a.size()) {
    Check((static_cast<unsigned char>(a[cut]) & 0xc0) != 0x80);
  }
}

void Render(const dpo::PreferenceRecord& record) {
  for (const char* name : {"chatml", "qwen3", "llama3", "mistral"}) {
    auto chat = dpo::ChatTemplate::FromName(name, "<s>", "</s>");
    try {
      std::string prompt = chat.Render(record.prompt_messages, true, "fuzz:1");
      auto all = record.prompt_messages;
      all.insert(all.end(), record.chosen_messages.begin(), record.chosen_messages.end());
      std::string full = chat.Render(all, false, "fuzz:1");
      Check(!full.empty() || all.empty());
    } catch (const dpo::RecordError&) {
    }
  }
}

// Writes `bytes` to an in-memory file and calls read(path); dpo::Error is the allowed failure.
template <typename Read>
void WithMemoryFile(std::string_view bytes, Read&& read) {
  int fd = memfd_create("fuzz_jsonl", 0);
  if (fd < 0) return;
  if (write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size())) {
    try {
      read("/proc/self/fd/" + std::to_string(fd));
    } catch (const dpo::Error&) {
    }
  }
  close(fd);
}

void ReadLines(const std::string& path) {
  dpo::LineReader reader(path);
  std::string line;
  while (reader.Next(&line)) Check(line.find('\n') == std::string::npos);
}

void LoadPrepared(const std::string& path) {
  dpo::PreparedDataset data(path);
  for (size_t i = 0; i < data.size(); ++i) {
    auto pair = data.pair(i);
    Check(data.max_sequence_length(i) == pair.prompt.size() + std::max(pair.chosen.size(), pair.rejected.size()));
    // Read every token: the sanitizer flags any pair that reaches outside the mapping.
    volatile int32_t sink = 0;
    for (auto ids : {pair.prompt, pair.chosen, pair.rejected}) {
      for (int32_t id : ids) sink = sink ^ id;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  if (input.starts_with("\x1f\x8b")) WithMemoryFile(input, ReadLines);
  if (input.starts_with("DPOPREP")) WithMemoryFile(input, LoadPrepared);
  size_t half = size / 2;
  CheckSplit(input.substr(0, half), input.substr(half));
  while (!input.empty()) {
    size_t nl = input.find('\n');
    std::string_view line = input.substr(0, nl);
    input = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);
    try {
      dpo::PreferenceRecord record = dpo::ParsePreferenceLine(line, "fuzz:1");
      if (record.conversational) {
        Check(!record.chosen_messages.empty() && !record.rejected_messages.empty());
        Render(record);
      } else {
        Check(!record.chosen.empty() && !record.rejected.empty());
        Check(dpo::FindInvalidUtf8(record.prompt + record.chosen + record.rejected) == std::string_view::npos);
      }
    } catch (const dpo::RecordError&) {
    }
  }
  return 0;
}
