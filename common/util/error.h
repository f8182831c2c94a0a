// The engine's error model: every failure inside common/ and worker/ is a dpo::Error whose
// message carries its context ("file:line: field: what"). The RPC layer converts to grpc::Status.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace dpo {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Prefixes an error with where it happened: Error(context + ": " + message).
[[noreturn]] void Fail(std::string_view context, std::string_view message);

}  // namespace dpo
