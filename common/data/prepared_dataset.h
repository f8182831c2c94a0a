// A tokenized preference dataset in one compact binary file, memory-mapped for training.
//
// Layout (little-endian; every section 8-byte aligned; offsets in the header):
//   FileHeader                      magic "DPOPREP\0", version, hashes, counts, section offsets
//   int32 tokens[num_tokens]        per pair: prompt ids, chosen completion, rejected completion
//   PairEntry[num_pairs]            offset (into tokens), prompt/chosen/rejected lengths and the
//                                   1-based input line of the pair (format version 2; version 1
//                                   files are refused, naming their version, and re-prepared)
//   metadata JSON (json_bytes)      {"options":{...},"on_error":..,"source":..,"report":{...}}
// Tokens are written as they are produced, so preparing holds only 24 bytes per pair in memory.
//
// Preparing is skipped when the file at the output path has this version and the same
// tokenizer hash (Tokenizer::content_hash), source hash (HashFile of the data file) and options
// hash. The file is written to a temp name, fsynced, then renamed: readers never see half a file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "common/data/line_reader.h"
#include "common/data/pair_tokenizer.h"
#include "common/data/preference_reader.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/mapped_file.h"

namespace dpo {

struct PrepareOptions {
  TokenizeOptions tokenize;
  // What a bad line does. Default: fail, so bad data is never silently thinned.
  OnError on_error = OnError::kFail;
  // Worker threads. 0 = every core (std::thread::hardware_concurrency). Default: 0.
  size_t num_threads = 0;
  // Lines per work item: large enough to amortise hand-off, small enough to balance. Default 256.
  size_t chunk_lines = 256;
  // A longer line fails with file:line before the rest of it is read (LineReader). Not part of
  // the options hash: it changes no prepared pair, only whether preparing fails. Default 16 MiB.
  size_t max_line_bytes = kDefaultMaxLineBytes;
};

struct PrepareResult {
  bool reused = false;  // an up-to-date file was already there
  DataReport report;    // of this run, or the one recorded in the reused file
  double seconds = 0;
};

// Reads `data_path` (.jsonl or .jsonl.gz), tokenizes every pair with `tokenizer` on all cores
// (pair order = line order) and writes `out_path`. Throws dpo::Error on file faults, and the
// first bad line's RecordError under OnError::kFail.
PrepareResult PrepareDataset(const Tokenizer& tokenizer, const std::string& data_path, const std::string& out_path,
                             const PrepareOptions& options);

// Throws dpo::Error "data_path: no preference pairs (<report>)" when `result` kept none (an empty
// file, or every line skipped or too long): a tool must not succeed on nothing.
void RequirePairs(const PrepareResult& result, const std::string& data_path);

class PreparedDataset {
 public:
  struct Pair {
    std::span<const int32_t> prompt, chosen, rejected;
  };

  // Maps `path` and validates its header and sections. Throws dpo::Error naming the path.
  explicit PreparedDataset(const std::string& path);

  size_t size() const { return num_pairs_; }
  // index < size(); not checked (hot path).
  Pair pair(size_t index) const;
  // The 1-based line of the input file pair `index` came from: pairs skipped or dropped while
  // preparing leave gaps, so this is not index + 1. index < size(); not checked.
  size_t source_line(size_t index) const;
  // Tokens of prompt + the longer completion: the pair's longest sequence before max_length.
  size_t max_sequence_length(size_t index) const;
  uint64_t tokenizer_hash() const { return tokenizer_hash_; }
  uint64_t source_hash() const { return source_hash_; }
  uint64_t options_hash() const { return options_hash_; }
  const std::string& metadata_json() const { return metadata_; }
  size_t num_tokens() const { return num_tokens_; }

 private:
  MappedFile file_;
  const char* entries_ = nullptr;
  const int32_t* tokens_ = nullptr;
  size_t num_pairs_ = 0, num_tokens_ = 0;
  uint64_t tokenizer_hash_ = 0, source_hash_ = 0, options_hash_ = 0;
  std::string metadata_;
};

}  // namespace dpo
