// The engine's error model: every failure inside common/ and worker/ is a dpo::Error whose
// message carries its context ("file:line: field: what") and whose code says what kind of
// failure it is. One table (ErrorCodeInfo) maps each code to its name in status.json
// (docs/worker_status.md), the gRPC status code the coordinator reports it as (a plain number:
// common/ does not depend on gRPC), whether a retry can help, and dpo-worker's exit status.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dpo {

enum class ErrorCode {
  kInternal,           // anything not classified below (a bug, out of memory, ...)
  kInvalidSpec,        // the job spec: a key, a value, a path it names
  kBadData,            // a data file's content (file:line)
  kBadModel,           // a model or checkpoint's content (file and tensor)
  kNonFinite,          // training diverged: too many non-finite steps
  kIo,                 // a file system operation failed (disk full, permissions, ...)
  kOutputLocked,       // another worker holds the output directory's lock
  kCollectiveTimeout,  // a collective waited longer than train.collective_timeout_seconds
  kLostRank,           // a rank died or its communicator failed
  kInterrupted,        // stopped by SIGTERM after writing a checkpoint
};

struct ErrorCodeInfo {
  ErrorCode code;
  const char* name;  // as written in status.json, e.g. "invalid_spec"
  int grpc_code;     // grpc::StatusCode's value, e.g. 3 = INVALID_ARGUMENT
  bool retryable;    // whether running the job again (from its latest checkpoint) can succeed
  int exit_code;     // dpo-worker's exit status when the job ends with this code
};

// The table's row of `code`.
const ErrorCodeInfo& InfoOf(ErrorCode code);
// The code whose name is `name`; nullopt for an unknown name.
std::optional<ErrorCode> ErrorCodeFromName(std::string_view name);

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ErrorCode code = ErrorCode::kInternal)
      : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// Prefixes an error with where it happened: Error(context + ": " + message, code).
[[noreturn]] void Fail(std::string_view context, std::string_view message, ErrorCode code = ErrorCode::kInternal);

}  // namespace dpo
