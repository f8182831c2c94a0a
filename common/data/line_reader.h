// Streams the lines of a text file, plain or gzip-compressed (detected by its magic bytes, not
// its name), without loading the whole file. A preference dataset is read through this.
#pragma once

#include <cstddef>
#include <string>

namespace dpo {

// The longest line a LineReader accepts by default: 16 MiB, far above any real preference record
// and far below what would strain a worker's memory.
inline constexpr size_t kDefaultMaxLineBytes = size_t{16} << 20;

class LineReader {
 public:
  // Opens `path`, which must be a regular file (a FIFO or device fails at once, never blocks).
  // Throws dpo::Error "path: cannot open: <reason>" / "path: not a regular file". Lines longer
  // than `max_line_bytes` (> 0) fail in Next, so a reader holds at most max_line_bytes plus one
  // 64 KiB read chunk, whatever the file holds.
  explicit LineReader(const std::string& path, size_t max_line_bytes = kDefaultMaxLineBytes);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Reads the next line into *line without its "\n" (and a "\r" before it). Returns false at
  // the end of the file. Throws dpo::Error "path:line: ..." on a read error or a gzip stream
  // that is corrupt or ends early (a truncated download must not pass as a shorter dataset), and
  // "path:line: line is longer than N bytes" as soon as a line passes max_line_bytes, before
  // the rest of it is read.
  bool Next(std::string* line);
  // 1-based number of the line last returned by Next (0 before the first).
  size_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }

 private:
  bool Fill();
  // Throws the file:line error when the current line's `bytes` pass max_line_bytes_.
  void CheckLength(size_t bytes) const;
  std::string path_;
  size_t max_line_bytes_;
  void* gz_ = nullptr;  // gzFile; zlib reads plain files transparently
  std::string buffer_;
  size_t pos_ = 0;
  bool eof_ = false;
  size_t line_number_ = 0;
};

}  // namespace dpo
