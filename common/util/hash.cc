#include "common/util/hash.h"

#include <cstdio>

#include "common/util/mapped_file.h"

namespace dpo {

Hasher& Hasher::Update(std::string_view bytes) {
  uint64_t h = state_;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  state_ = h;
  return *this;
}

Hasher& Hasher::Update(uint64_t value) {
  char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return Update(std::string_view(bytes, 8));
}

std::string Hasher::HexDigest() const {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(state_));
  return text;
}

uint64_t HashFile(const std::string& path) {
  MappedFile file(path);
  return Hasher().Update(file.view()).Digest();
}

}  // namespace dpo
