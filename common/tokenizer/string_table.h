// A flat open-addressing hash map from byte strings to 64-bit values, with the keys copied into
// one arena: lookups by string_view neither allocate nor chase per-node pointers. The BPE
// vocabulary (128k+ strings, probed for every word) and the per-thread word cache use it.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace dpo::tok {

inline uint64_t HashBytes(std::string_view s) {
  const char* p = s.data();
  size_t n = s.size();
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xFF51AFD7ED558CCDULL);
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ v) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 31;
  }
  uint64_t v = 0;
  std::memcpy(&v, p, n);
  h = (h ^ v) * 0x94D049BB133111EBULL;
  return h ^ (h >> 29);
}

class StringTable {
 public:
  // Inserts key -> value; an existing key keeps its value and false is returned.
  bool Insert(std::string_view key, uint64_t value) {
    if ((size_ + 1) * 2 > slots_.size()) Grow();
    uint64_t h = HashBytes(key);
    Slot* slot = Probe(key, h);
    if (slot->used) return false;
    *slot = {h, static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(key.size()), true, value};
    arena_.append(key);
    ++size_;
    return true;
  }
  const uint64_t* Find(std::string_view key) const {
    if (size_ == 0) return nullptr;
    const Slot* slot = const_cast<StringTable*>(this)->Probe(key, HashBytes(key));
    return slot->used ? &slot->value : nullptr;
  }
  size_t size() const { return size_; }
  size_t arena_bytes() const { return arena_.size(); }
  void Clear() {
    slots_.clear();
    arena_.clear();
    size_ = 0;
  }

 private:
  struct Slot {
    uint64_t hash;
    uint32_t offset, length;
    bool used;
    uint64_t value;
  };
  // The slot holding `key`, or the empty slot where it would go.
  Slot* Probe(std::string_view key, uint64_t h) {
    const size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (!s.used) return &s;
      if (s.hash == h && s.length == key.size() && std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0)
        return &s;
    }
  }
  void Grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 64 : old.size() * 2, Slot{0, 0, 0, false, 0});
    const size_t mask = slots_.size() - 1;
    for (const Slot& s : old) {
      if (!s.used) continue;
      size_t i = s.hash & mask;
      while (slots_[i].used) i = (i + 1) & mask;
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  std::string arena_;
  size_t size_ = 0;
};

}  // namespace dpo::tok
