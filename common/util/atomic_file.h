// Files replaced atomically: written to a temporary file beside the target, fsynced, renamed over
// it, and the rename made durable (fsync of the directory). A reader sees the old file or the
// new one, never a part; a crash leaves at most a stale `PATH.tmp.PID`. Torch-free.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dpo {

// One atomic replacement of `path`: Write() any number of times, then Commit(). Destroyed
// without Commit() (an exception while writing), it removes the temporary file and leaves `path`
// as it was. Every failure throws dpo::Error naming the file.
class AtomicWriter {
 public:
  explicit AtomicWriter(std::string path);
  ~AtomicWriter();
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;

  void Write(const void* data, size_t n);
  void Commit();

 private:
  std::string path_;
  std::string temp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Replaces `path` with `text` atomically (an AtomicWriter of one Write).
void WriteFileAtomically(const std::string& path, std::string_view text);

}  // namespace dpo
