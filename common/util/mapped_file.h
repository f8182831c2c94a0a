// A read-only memory map of a whole file. Owns the mapping (RAII); movable, not copyable.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dpo {

// Opens `path` read-only (close-on-exec) and returns the descriptor. Refuses anything that is not
// a regular file (a FIFO, a device, a directory) with dpo::Error "path: not a regular file",
// without blocking: the open is non-blocking, so a FIFO with no writer cannot hang the caller,
// and the check is on the opened descriptor, so a path swapped in between cannot slip through.
// Every reader of a user-named input file opens it through here. Sets *size (when given) to the
// file's size.
int OpenRegularFile(const std::string& path, size_t* size = nullptr);

class MappedFile {
 public:
  // Maps `path` read-only. Throws dpo::Error naming the path when it cannot be opened or mapped,
  // or is not a regular file (OpenRegularFile). An empty file maps to an empty view.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return data_; }
  size_t size() const { return size_; }
  std::string_view view() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  void Release();
  std::string path_;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace dpo
