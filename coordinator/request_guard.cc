#include "coordinator/request_guard.h"

#include <algorithm>

namespace dpo {
namespace {

// The length of the valid UTF-8 sequence at text[i], or 0 when it is invalid (RFC 3629).
size_t SequenceLength(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0)
      lo = 0xA0;  // no overlong forms
    else if (c == 0xED)
      hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0)
      lo = 0x90;
    else if (c == 0xF4)
      hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return 0;
  }
  if (i + n > text.size() || byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return n;
}

}  // namespace

std::optional<size_t> FirstInvalidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = SequenceLength(text, i);
    if (n == 0) return i;
    i += n;
  }
  return std::nullopt;
}

std::string ReplyText(std::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  for (size_t i = 0; i < text.size();) {
    const size_t n = SequenceLength(text, i);
    const std::string_view piece = n ? text.substr(i, n) : "\xEF\xBF\xBD";
    if (out.size() + piece.size() > max_bytes) return out + "\xE2\x80\xA6";
    out += piece;
    i += n ? n : 1;
  }
  return out;
}

bool RateLimiter::Allow(const std::string& user) {
  if (rate_ <= 0) return true;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  const auto [it, added] = buckets_.try_emplace(user, Bucket{2 * rate_, now});
  Bucket& b = it->second;
  b.tokens = std::min(2 * rate_, b.tokens + rate_ * std::chrono::duration<double>(now - b.last).count());
  b.last = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

}  // namespace dpo
