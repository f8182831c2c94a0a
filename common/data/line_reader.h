// Streams the lines of a text file, plain or gzip-compressed (detected by its magic bytes, not
// its name), without loading the whole file. A preference dataset is read through this.
#pragma once

#include <cstddef>
#include <string>

namespace dpo {

class LineReader {
 public:
  // Opens `path`. Throws dpo::Error "path: cannot open: <reason>" when it cannot be read.
  explicit LineReader(const std::string& path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Reads the next line into *line without its "\n" (and a "\r" before it). Returns false at
  // the end of the file. Throws dpo::Error "path:line: ..." on a read error or a gzip stream
  // that is corrupt or ends early (a truncated download must not pass as a shorter dataset).
  bool Next(std::string* line);
  // 1-based number of the line last returned by Next (0 before the first).
  size_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }

 private:
  bool Fill();
  std::string path_;
  void* gz_ = nullptr;  // gzFile; zlib reads plain files transparently
  std::string buffer_;
  size_t pos_ = 0;
  bool eof_ = false;
  size_t line_number_ = 0;
};

}  // namespace dpo
