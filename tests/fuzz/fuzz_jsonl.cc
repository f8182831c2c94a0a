// Fuzzes the preference JSONL record parser (every line of the input), the implicit-prompt split
// and the native chat templates; an input that starts with the gzip magic is also read through
// LineReader (an in-memory file), whose only allowed failure is dpo::Error. Bad input may only
// raise RecordError; the invariants below must hold for everything that parses.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/data/chat_template.h"
#include "common/data/line_reader.h"
#include "common/data/preference_record.h"

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

// Reads `bytes` as a file (memfd) through LineReader: lines never hold a newline.
void ReadAsFile(std::string_view bytes) {
  int fd = memfd_create("fuzz_jsonl", 0);
  if (fd < 0) return;
  if (write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size())) {
    try {
      dpo::LineReader reader("/proc/self/fd/" + std::to_string(fd));
      std::string line;
      while (reader.Next(&line)) Check(line.find('\n') == std::string::npos);
    } catch (const dpo::Error&) {
    }
  }
  close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  if (input.starts_with("\x1f\x8b")) ReadAsFile(input);
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
