// What keeps one caller from exhausting the service: text checks for request fields (UTF-8,
// bounded replies) and a per-user request-rate limit. Torch- and gRPC-free.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace dpo {

// The byte offset of the first invalid UTF-8 sequence in `text` (overlong forms, surrogates and
// code points past U+10FFFF are invalid too); nullopt when `text` is valid.
std::optional<size_t> FirstInvalidUtf8(std::string_view text);

// `text` with every invalid sequence replaced by U+FFFD, and cut (at a character boundary, with
// "…" appended) to at most `max_bytes` + 3 bytes: safe to put in a proto3 string of a reply.
std::string ReplyText(std::string_view text, size_t max_bytes);

// A token bucket per user: `rate` requests per second on average, bursts of up to 2 * rate.
class RateLimiter {
 public:
  // rate 0: no limit.
  explicit RateLimiter(double rate) : rate_(rate) {}
  // Whether `user` may make one more request now (it is counted).
  bool Allow(const std::string& user);

 private:
  struct Bucket {
    double tokens;
    std::chrono::steady_clock::time_point last;
  };
  const double rate_;
  std::mutex mutex_;
  std::map<std::string, Bucket> buckets_;  // one per user that has made a request
};

}  // namespace dpo
