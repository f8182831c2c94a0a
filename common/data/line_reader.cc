#include "common/data/line_reader.h"

#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "common/util/error.h"
#include "common/util/mapped_file.h"

namespace dpo {
namespace {
constexpr unsigned kChunk = 1 << 16;
}

LineReader::LineReader(const std::string& path, size_t max_line_bytes) : path_(path), max_line_bytes_(max_line_bytes) {
  if (max_line_bytes == 0) Fail(path, "max_line_bytes must be > 0");
  int fd = OpenRegularFile(path);
  gzFile gz = gzdopen(fd, "rb");
  if (gz == nullptr) {
    ::close(fd);
    Fail(path, "cannot open: out of memory");
  }
  gzbuffer(gz, kChunk);
  gz_ = gz;
}

LineReader::~LineReader() {
  if (gz_ != nullptr) gzclose(static_cast<gzFile>(gz_));
}

bool LineReader::Fill() {
  if (eof_) return false;
  if (pos_ > 0) {
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  size_t old = buffer_.size();
  buffer_.resize(old + kChunk);
  gzFile gz = static_cast<gzFile>(gz_);
  int n = gzread(gz, buffer_.data() + old, kChunk);
  int code = Z_OK;
  const char* message = gzerror(gz, &code);
  if (n < 0 || (code != Z_OK && code != Z_STREAM_END)) {
    buffer_.resize(old);
    std::string context = path_ + ":" + std::to_string(line_number_ + 1);
    if (code == Z_ERRNO) Fail(context, std::string("read error: ") + std::strerror(errno));
    if (code == Z_BUF_ERROR) Fail(context, "gzip stream is truncated (unexpected end of file)");
    Fail(context, std::string("corrupt gzip stream: ") + (message ? message : "unknown"));
  }
  buffer_.resize(old + static_cast<size_t>(n));
  if (n == 0) eof_ = true;
  return n > 0;
}

void LineReader::CheckLength(size_t bytes) const {
  if (bytes <= max_line_bytes_) return;
  Fail(path_ + ":" + std::to_string(line_number_ + 1),
       "line is longer than " + std::to_string(max_line_bytes_) +
           " bytes (the max_line_bytes limit); the rest of it is not read",
       ErrorCode::kBadData);
}

bool LineReader::Next(std::string* line) {
  size_t scanned = pos_;
  while (true) {
    size_t nl = buffer_.find('\n', scanned);
    if (nl != std::string::npos) {
      size_t end = (nl > pos_ && buffer_[nl - 1] == '\r') ? nl - 1 : nl;
      CheckLength(end - pos_);
      line->assign(buffer_, pos_, end - pos_);
      pos_ = nl + 1;
      ++line_number_;
      return true;
    }
    scanned = buffer_.size() - pos_;  // relative: Fill() moves the unread part to the front
    CheckLength(scanned);             // before reading more of a line already too long
    if (!Fill()) break;
  }
  if (pos_ >= buffer_.size()) return false;
  line->assign(buffer_, pos_, std::string::npos);
  if (!line->empty() && line->back() == '\r') line->pop_back();
  pos_ = buffer_.size();
  ++line_number_;
  return true;
}

}  // namespace dpo
