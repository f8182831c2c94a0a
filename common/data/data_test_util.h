// Helpers for the data tests: scratch files, plain and gzip.
#pragma once

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "common/tokenizer/tokenizer.h"

namespace dpo::testing {

// `relative` under ../shared beside the repository (ctest sets DPO_SOURCE_DIR to it).
inline std::string SharedDataPath(const std::string& relative) {
  const char* source = std::getenv("DPO_SOURCE_DIR");
  return std::string(source ? source : ".") + "/../shared/" + relative;
}

// Whether `path` exists. Without it a test skips on a developer's machine, but in CI (CI set) it
// also fails: CI runs with ../shared, as the Python oracle tests require.
inline bool SharedDataPresent(const std::string& path) {
  if (std::filesystem::exists(path)) return true;
  if (std::getenv("CI") != nullptr) ADD_FAILURE() << path << " is missing: CI runs with ../shared";
  return false;
}

// A file under the temp dir, removed when this goes out of scope.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& name)
      : path_((std::filesystem::temp_directory_path() / ("dpo_data_test_" + std::to_string(::getpid()) + "_" + name))
                  .string()) {}
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

// A byte-level stand-in for a real tokenizer: id = byte value, "<s>" = 256 (BOS, added by
// add_special_tokens), "</s>" = 257 (EOS), "<pad>" = 258. Lets the pipeline be tested without
// tokenizer files.
class ByteTokenizer : public Tokenizer {
 public:
  static constexpr TokenId kBos = 256, kEos = 257, kPad = 258;
  explicit ByteTokenizer(std::string chat_template = "") : chat_template_(std::move(chat_template)) {}
  std::vector<TokenId> Encode(std::string_view text, bool add_special_tokens) const override {
    std::vector<TokenId> ids;
    if (add_special_tokens) ids.push_back(kBos);
    for (size_t i = 0; i < text.size();) {
      if (text.substr(i, 3) == "<s>") {
        ids.push_back(kBos), i += 3;
      } else if (text.substr(i, 4) == "</s>") {
        ids.push_back(kEos), i += 4;
      } else {
        ids.push_back(static_cast<unsigned char>(text[i++]));
      }
    }
    return ids;
  }
  std::string Decode(const std::vector<TokenId>& ids, bool skip_special_tokens) const override {
    std::string text;
    for (TokenId id : ids) {
      if (id < 256)
        text += static_cast<char>(id);
      else if (!skip_special_tokens)
        text += id == kBos ? "<s>" : id == kEos ? "</s>" : "<pad>";
    }
    return text;
  }
  std::optional<TokenId> bos_id() const override { return kBos; }
  std::optional<TokenId> eos_id() const override { return kEos; }
  std::optional<TokenId> pad_id() const override { return kPad; }
  std::optional<TokenId> TokenToId(std::string_view) const override { return std::nullopt; }
  size_t vocab_size() const override { return 259; }
  const std::string& chat_template() const override { return chat_template_; }
  uint64_t content_hash() const override { return 0x1234 + chat_template_.size(); }

 private:
  std::string chat_template_;
};

inline std::vector<TokenId> Ids(std::string_view text) {
  std::vector<TokenId> ids;
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

}  // namespace dpo::testing
