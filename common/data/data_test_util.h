// Helpers for the data tests: scratch files, plain and gzip.
#pragma once

#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace dpo::testing {

// A file under the temp dir, removed when this goes out of scope.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& name)
      : path_((std::filesystem::temp_directory_path() /
               ("dpo_data_test_" + std::to_string(::getpid()) + "_" + name)).string()) {}
  ~ScratchFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }
  void Write(const std::string& bytes) const { std::ofstream(path_, std::ios::binary) << bytes; }
  void WriteGzip(const std::string& bytes) const {
    gzFile gz = gzopen(path_.c_str(), "wb");
    gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(gz);
  }

 private:
  std::string path_;
};

}  // namespace dpo::testing
