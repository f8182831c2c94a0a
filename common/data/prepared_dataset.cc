#include "common/data/prepared_dataset.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "common/data/line_reader.h"
#include "common/util/hash.h"

namespace dpo {
namespace {

constexpr char kMagic[8] = {'D', 'P', 'O', 'P', 'R', 'E', 'P', '\0'};
// 2: each PairEntry records the input line its pair came from (1 had a reserved zero there).
constexpr uint32_t kVersion = 2;

struct FileHeader {
  char magic[8];
  uint32_t version;
  uint32_t reserved;
  uint64_t tokenizer_hash, source_hash, options_hash;
  uint64_t num_pairs, num_tokens;
  uint64_t json_offset, json_bytes, pairs_offset, tokens_offset;
};
struct PairEntry {
  uint64_t offset;
  uint32_t prompt_len, chosen_len, rejected_len;
  uint32_t source_line;  // 1-based line of the input file
};
static_assert(sizeof(FileHeader) == 88 && sizeof(PairEntry) == 24);

uint64_t Align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

// The header's hashes as 16 hex digits, for people reading the metadata.
std::string Hex(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

const char* OnErrorName(OnError on_error) { return on_error == OnError::kFail ? "fail" : "skip"; }

nlohmann::ordered_json ReportJson(const DataReport& r) {
  nlohmann::ordered_json j;
  j["lines"] = r.lines;
  j["pairs"] = r.pairs;
  j["skipped"] = r.skipped;
  j["dropped"] = r.dropped;
  j["skipped_by_reason"] = r.skipped_by_reason;
  j["first_messages"] = r.first_messages;
  return j;
}

DataReport ReportFromJson(const nlohmann::json& j) {
  DataReport r;
  r.lines = j.value("lines", size_t{0});
  r.pairs = j.value("pairs", size_t{0});
  r.skipped = j.value("skipped", size_t{0});
  r.dropped = j.value("dropped", size_t{0});
  r.skipped_by_reason = j.value("skipped_by_reason", std::map<std::string, size_t>{});
  r.first_messages = j.value("first_messages", std::vector<std::string>{});
  return r;
}

// The header of an existing prepared file, if `path` holds one. Something other than a regular
// file there (a FIFO would block a plain open) fails, naming the path.
std::optional<FileHeader> ReadHeader(const std::string& path) {
  FileHeader header;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  const int fd = OpenRegularFile(path);
  const bool ok = ::read(fd, &header, sizeof header) == static_cast<ssize_t>(sizeof header);
  ::close(fd);
  if (!ok || std::memcmp(header.magic, kMagic, 8) != 0) return std::nullopt;
  return header;
}

struct ChunkResult {
  std::vector<TokenizedPair> pairs;
  std::vector<size_t> lines;  // the input line of each pair
  DataReport report;
  std::exception_ptr error;  // the chunk's first fatal error
};

void ProcessChunk(const PairTokenizer& tokenizer, const std::string& path, OnError on_error,
                  const std::vector<std::string>& lines, const std::vector<size_t>& numbers, ChunkResult* out) {
  try {
    for (size_t i = 0; i < lines.size(); ++i) {
      std::string context = path + ":" + std::to_string(numbers[i]);
      ++out->report.lines;
      try {
        auto pair =
            tokenizer.Tokenize(ParsePreferenceLine(lines[i], context, tokenizer.options().implicit_prompt), context);
        if (!pair) {
          ++out->report.dropped;
          continue;
        }
        out->pairs.push_back(std::move(*pair));
        out->lines.push_back(numbers[i]);
        ++out->report.pairs;
      } catch (const RecordError& error) {
        if (on_error == OnError::kFail) throw;
        out->report.AddSkipped(error);
      }
    }
  } catch (...) {
    out->error = std::current_exception();
  }
}

// Up to `chunks` chunks of `chunk` non-blank lines each, with their line numbers.
struct Round {
  std::vector<std::vector<std::string>> lines;
  std::vector<std::vector<size_t>> numbers;
};

Round ReadRound(LineReader* reader, size_t chunks, size_t chunk, bool* done) {
  Round round;
  std::string line;
  while (round.lines.size() < chunks && !*done) {
    round.lines.emplace_back();
    round.numbers.emplace_back();
    while (round.lines.back().size() < chunk) {
      if (!reader->Next(&line)) {
        *done = true;
        break;
      }
      if (IsBlankLine(line)) continue;
      round.lines.back().push_back(std::move(line));
      round.numbers.back().push_back(reader->line_number());
    }
    if (round.lines.back().empty()) {
      round.lines.pop_back();
      round.numbers.pop_back();
    }
  }
  return round;
}

class AtomicWriter {
 public:
  explicit AtomicWriter(std::string path)
      : path_(std::move(path)), temp_(path_ + ".tmp." + std::to_string(::getpid())) {
    file_ = std::fopen(temp_.c_str(), "wb");
    if (file_ == nullptr) Fail(temp_, std::string("cannot create: ") + std::strerror(errno));
  }
  ~AtomicWriter() {
    if (file_ != nullptr) {
      std::fclose(file_);
      std::remove(temp_.c_str());
    }
  }
  void Write(const void* data, size_t bytes) {
    if (bytes && std::fwrite(data, 1, bytes, file_) != bytes) {
      Fail(temp_, std::string("write failed: ") + std::strerror(errno));
    }
  }
  void WriteAt(long offset, const void* data, size_t bytes) {
    if (std::fseek(file_, offset, SEEK_SET) != 0) Fail(temp_, std::string("seek failed: ") + std::strerror(errno));
    Write(data, bytes);
  }
  void PadTo8(uint64_t written) {
    static constexpr char kZeros[8] = {};
    Write(kZeros, Align8(written) - written);
  }
  void Commit() {
    if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0) {
      Fail(temp_, std::string("flush failed: ") + std::strerror(errno));
    }
    std::fclose(file_);
    file_ = nullptr;
    if (std::rename(temp_.c_str(), path_.c_str()) != 0) {
      std::string why = std::strerror(errno);
      std::remove(temp_.c_str());
      Fail(path_, "cannot rename the finished file into place: " + why);
    }
    // Make the rename itself durable.
    std::string dir = std::filesystem::path(path_).parent_path().string();
    int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  }

 private:
  std::string path_, temp_;
  FILE* file_ = nullptr;
};

}  // namespace

PrepareResult PrepareDataset(const Tokenizer& tokenizer, const std::string& data_path, const std::string& out_path,
                             const PrepareOptions& options) {
  auto start = std::chrono::steady_clock::now();
  PairTokenizer pair_tokenizer(tokenizer, options.tokenize);
  std::string options_json = options.tokenize.ToJson();
  FileHeader header{};
  std::memcpy(header.magic, kMagic, 8);
  header.version = kVersion;
  header.tokenizer_hash = tokenizer.content_hash();
  header.source_hash = HashFile(data_path);
  header.options_hash = Hasher().Update(options_json).Update(OnErrorName(options.on_error)).Digest();

  PrepareResult result;
  if (auto old = ReadHeader(out_path);
      old && old->version == kVersion && old->tokenizer_hash == header.tokenizer_hash &&
      old->source_hash == header.source_hash && old->options_hash == header.options_hash) {
    PreparedDataset existing(out_path);
    result.reused = true;
    result.report = ReportFromJson(nlohmann::json::parse(existing.metadata_json())["report"]);
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
  }

  size_t threads = options.num_threads ? options.num_threads : std::max(1u, std::thread::hardware_concurrency());
  size_t chunk = std::max<size_t>(1, options.chunk_lines);
  // Tokens stream to the file as they come (memory holds only the 24-byte entries); the header
  // is written last, over a placeholder.
  AtomicWriter writer(out_path);
  writer.Write(&header, sizeof header);
  std::vector<PairEntry> entries;
  uint64_t num_tokens = 0;
  // Rounds of up to `threads` chunks: the workers tokenize round k while this thread reads round
  // k+1; results are appended in chunk order, so pair order is line order.
  LineReader reader(data_path, options.max_line_bytes);
  bool done = false;
  Round current = ReadRound(&reader, threads, chunk, &done);
  while (!current.lines.empty()) {
    std::vector<ChunkResult> results(current.lines.size());
    std::vector<std::thread> workers;
    for (size_t t = 0; t < current.lines.size(); ++t) {
      workers.emplace_back(ProcessChunk, std::cref(pair_tokenizer), std::cref(data_path), options.on_error,
                           std::cref(current.lines[t]), std::cref(current.numbers[t]), &results[t]);
    }
    Round next;
    std::exception_ptr read_error;
    try {
      if (!done) next = ReadRound(&reader, threads, chunk, &done);
    } catch (...) {
      read_error = std::current_exception();
    }
    for (auto& worker : workers) worker.join();
    for (auto& r : results) {
      if (r.error) std::rethrow_exception(r.error);  // a bad line comes before a later read fault
      result.report.Merge(r.report);
      for (size_t k = 0; k < r.pairs.size(); ++k) {
        const TokenizedPair& pair = r.pairs[k];
        if (r.lines[k] > UINT32_MAX) {
          Fail(data_path + ":" + std::to_string(r.lines[k]), "more lines than a prepared file can number");
        }
        PairEntry entry{num_tokens, static_cast<uint32_t>(pair.prompt.size()),
                        static_cast<uint32_t>(pair.chosen.size()), static_cast<uint32_t>(pair.rejected.size()),
                        static_cast<uint32_t>(r.lines[k])};
        entries.push_back(entry);
        for (const auto* ids : {&pair.prompt, &pair.chosen, &pair.rejected}) {
          writer.Write(ids->data(), ids->size() * sizeof(TokenId));
          num_tokens += ids->size();
        }
      }
    }
    if (read_error) std::rethrow_exception(read_error);
    current = std::move(next);
  }

  nlohmann::ordered_json meta;
  meta["format"] = "dpo-prepared";
  meta["version"] = kVersion;
  meta["source"] = data_path;
  meta["tokenizer_hash"] = Hex(header.tokenizer_hash);
  meta["source_hash"] = Hex(header.source_hash);
  meta["options_hash"] = Hex(header.options_hash);
  meta["options"] = nlohmann::ordered_json::parse(options_json);
  meta["on_error"] = OnErrorName(options.on_error);
  meta["report"] = ReportJson(result.report);
  std::string meta_text = meta.dump();

  header.num_pairs = entries.size();
  header.num_tokens = num_tokens;
  header.tokens_offset = sizeof(FileHeader);
  header.pairs_offset = Align8(header.tokens_offset + num_tokens * sizeof(TokenId));
  header.json_offset = header.pairs_offset + entries.size() * sizeof(PairEntry);
  header.json_bytes = meta_text.size();
  writer.PadTo8(header.tokens_offset + num_tokens * sizeof(TokenId));
  writer.Write(entries.data(), entries.size() * sizeof(PairEntry));
  writer.Write(meta_text.data(), meta_text.size());
  writer.WriteAt(0, &header, sizeof header);
  writer.Commit();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

void RequirePairs(const PrepareResult& result, const std::string& data_path) {
  if (result.report.pairs == 0) {
    Fail(data_path, "no preference pairs (" + result.report.Summary() + ")", ErrorCode::kBadData);
  }
}

PreparedDataset::PreparedDataset(const std::string& path) : file_(path) {
  FileHeader header;
  if (file_.size() < sizeof header) Fail(path, "not a prepared dataset (too short)");
  std::memcpy(&header, file_.data(), sizeof header);
  if (std::memcmp(header.magic, kMagic, 8) != 0) Fail(path, "not a prepared dataset (bad magic)");
  if (header.version != kVersion) {
    Fail(path, "prepared dataset version " + std::to_string(header.version) + ", expected " + std::to_string(kVersion) +
                   " (version 2 records each pair's input line); prepare it again");
  }
  uint64_t size = file_.size();
  // Each section inside the file (checked without overflow: counts are bounded first).
  auto inside = [size](uint64_t offset, uint64_t bytes) { return offset <= size && bytes <= size - offset; };
  bool sane = header.num_pairs <= size / sizeof(PairEntry) && header.num_tokens <= size / sizeof(int32_t) &&
              header.pairs_offset % 8 == 0 && header.tokens_offset % 8 == 0 &&
              inside(header.json_offset, header.json_bytes) &&
              inside(header.pairs_offset, header.num_pairs * sizeof(PairEntry)) &&
              inside(header.tokens_offset, header.num_tokens * sizeof(int32_t));
  if (!sane) Fail(path, "corrupt prepared dataset (sections out of bounds)");
  num_pairs_ = header.num_pairs;
  num_tokens_ = header.num_tokens;
  tokenizer_hash_ = header.tokenizer_hash;
  source_hash_ = header.source_hash;
  options_hash_ = header.options_hash;
  metadata_.assign(file_.data() + header.json_offset, header.json_bytes);
  entries_ = file_.data() + header.pairs_offset;
  tokens_ = reinterpret_cast<const int32_t*>(file_.data() + header.tokens_offset);
  for (size_t i = 0; i < num_pairs_; ++i) {
    PairEntry e;
    std::memcpy(&e, entries_ + i * sizeof e, sizeof e);
    if (e.offset + uint64_t{e.prompt_len} + e.chosen_len + e.rejected_len > num_tokens_) {
      Fail(path, "corrupt prepared dataset (pair " + std::to_string(i) + " out of bounds)");
    }
  }
}

PreparedDataset::Pair PreparedDataset::pair(size_t index) const {
  PairEntry e;
  std::memcpy(&e, entries_ + index * sizeof e, sizeof e);
  const int32_t* p = tokens_ + e.offset;
  return {{p, e.prompt_len}, {p + e.prompt_len, e.chosen_len}, {p + e.prompt_len + e.chosen_len, e.rejected_len}};
}

size_t PreparedDataset::source_line(size_t index) const {
  PairEntry e;
  std::memcpy(&e, entries_ + index * sizeof e, sizeof e);
  return e.source_line;
}

size_t PreparedDataset::max_sequence_length(size_t index) const {
  Pair p = pair(index);
  return p.prompt.size() + std::max(p.chosen.size(), p.rejected.size());
}

}  // namespace dpo
