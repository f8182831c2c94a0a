// Content hashing for cache keys (prepared datasets, precomputed reference log-probs).
// 64-bit FNV-1a over bytes; stable across runs and machines. Not cryptographic.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dpo {

class Hasher {
 public:
  Hasher& Update(std::string_view bytes);
  Hasher& Update(uint64_t value);
  uint64_t Digest() const { return state_; }
  // 16 lowercase hex digits.
  std::string HexDigest() const;

 private:
  uint64_t state_ = 0xcbf29ce484222325ULL;
};

// Hashes a whole file's bytes. Throws dpo::Error naming the path if it cannot be read.
uint64_t HashFile(const std::string& path);

}  // namespace dpo
