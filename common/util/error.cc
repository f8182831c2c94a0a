#include "common/util/error.h"

#include <array>

namespace dpo {
namespace {

// gRPC status codes (grpc/status.h), by value.
constexpr int kGrpcCancelled = 1, kGrpcInvalidArgument = 3, kGrpcDeadlineExceeded = 4, kGrpcFailedPrecondition = 9,
              kGrpcAborted = 10, kGrpcInternal = 13, kGrpcUnavailable = 14;

// The one table. Retryable: failures that are not the job's own fault (a lost or stopped rank,
// preemption, transient I/O, the unknown); a bad spec, bad data or a diverged run fails the
// same way again. Exit statuses: 75 is sysexits' EX_TEMPFAIL ("try again later"); 76 marks a
// collective timeout, so the launcher can tell it from an ordinary failure (1).
constexpr std::array<ErrorCodeInfo, 10> kTable{{
    {ErrorCode::kInternal, "internal", kGrpcInternal, true, 1},
    {ErrorCode::kInvalidSpec, "invalid_spec", kGrpcInvalidArgument, false, 1},
    {ErrorCode::kBadData, "bad_data", kGrpcInvalidArgument, false, 1},
    {ErrorCode::kBadModel, "bad_model", kGrpcInvalidArgument, false, 1},
    {ErrorCode::kNonFinite, "non_finite", kGrpcFailedPrecondition, false, 1},
    {ErrorCode::kIo, "io", kGrpcUnavailable, true, 1},
    {ErrorCode::kOutputLocked, "output_locked", kGrpcAborted, false, 1},
    {ErrorCode::kCollectiveTimeout, "collective_timeout", kGrpcDeadlineExceeded, true, 76},
    {ErrorCode::kLostRank, "lost_rank", kGrpcUnavailable, true, 1},
    {ErrorCode::kInterrupted, "interrupted", kGrpcCancelled, true, 75},
}};

}  // namespace

const ErrorCodeInfo& InfoOf(ErrorCode code) {
  for (const ErrorCodeInfo& info : kTable) {
    if (info.code == code) return info;
  }
  return kTable[0];  // unreachable: every enumerator has a row (error_test checks)
}

std::optional<ErrorCode> ErrorCodeFromName(std::string_view name) {
  for (const ErrorCodeInfo& info : kTable) {
    if (name == info.name) return info.code;
  }
  return std::nullopt;
}

void Fail(std::string_view context, std::string_view message, ErrorCode code) {
  std::string text(context);
  if (!text.empty()) text += ": ";
  text += message;
  throw Error(text, code);
}

}  // namespace dpo
