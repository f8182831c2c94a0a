#include "common/util/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "common/util/error.h"
#include "common/util/path_util.h"

namespace dpo {

AtomicWriter::AtomicWriter(std::string path)
    : path_(std::move(path)), temp_(path_ + ".tmp." + std::to_string(getpid())) {
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) Fail(temp_, std::string("cannot create: ") + std::strerror(errno));
}

AtomicWriter::~AtomicWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_.c_str());
}

void AtomicWriter::Write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) Fail(temp_, std::string("write failed: ") + std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicWriter::Commit() {
  if (::fsync(fd_) != 0) Fail(temp_, std::string("fsync failed: ") + std::strerror(errno));
  if (::close(fd_) != 0) {
    fd_ = -1;
    Fail(temp_, std::string("close failed: ") + std::strerror(errno));
  }
  fd_ = -1;
  if (std::rename(temp_.c_str(), path_.c_str()) != 0) {
    Fail(path_, std::string("rename from temp file failed: ") + std::strerror(errno));
  }
  committed_ = true;
  // Make the rename itself durable.
  int dfd = ::open(DirName(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void WriteFileAtomically(const std::string& path, std::string_view text) {
  AtomicWriter out(path);
  out.Write(text.data(), text.size());
  out.Commit();
}

}  // namespace dpo
