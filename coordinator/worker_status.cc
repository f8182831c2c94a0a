#include "coordinator/worker_status.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/util/error.h"
#include "common/util/path_util.h"

namespace dpo {

std::optional<WorkerStatus> ReadWorkerStatus(const std::string& output_dir, std::string* problem) {
  std::string ignored;
  std::string& why = problem ? *problem : ignored;
  why.clear();
  const std::string path = JoinPath(output_dir, "status.json");
  // O_NONBLOCK: opening a FIFO put there returns at once, and fstat then refuses it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) why = path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::string text;
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    why = path + ": not a regular file";
  } else if (info.st_size > kMaxWorkerStatusBytes) {
    why = path + ": " + std::to_string(info.st_size) + " bytes, more than the " +
          std::to_string(kMaxWorkerStatusBytes) + " a status may have";
  } else {
    text.resize(static_cast<size_t>(kMaxWorkerStatusBytes) + 1);
    size_t got = 0;
    for (ssize_t n; got < text.size() && (n = ::read(fd, text.data() + got, text.size() - got)) != 0;) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        why = path + ": " + std::strerror(errno);
        break;
      }
      got += static_cast<size_t>(n);
    }
    text.resize(got);
    if (why.empty() && got > static_cast<size_t>(kMaxWorkerStatusBytes)) why = path + ": grew past the size limit";
  }
  ::close(fd);
  if (!why.empty()) return std::nullopt;
  auto status = ParseWorkerStatus(text);
  if (!status) why = path + ": not a status object";
  return status;
}

std::optional<WorkerStatus> ParseWorkerStatus(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("state") || !j["state"].is_string()) return std::nullopt;
  WorkerStatus status;
  status.state = j["state"].get<std::string>();
  auto integer = [&j](const char* key) -> int64_t {
    return j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0;
  };
  auto string = [&j](const char* key) -> std::string {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
  };
  status.step = integer("step");
  status.total_steps = integer("total_steps");
  status.error_code = string("error_code");
  status.reason = string("reason");
  if (j.contains("rank") && j["rank"].is_number_integer()) status.rank = j["rank"].get<int>();
  if (j.contains("metrics") && j["metrics"].is_object()) {
    for (const auto& [key, value] : j["metrics"].items()) {
      if (value.is_number()) status.metrics[key] = value.get<double>();
    }
  }
  return status;
}

std::string WorkerStatusJson(const WorkerStatus& status) {
  nlohmann::json j = {{"state", status.state},           {"step", status.step},
                      {"total_steps", status.total_steps}, {"metrics", status.metrics},
                      {"error_code", status.error_code},   {"reason", status.reason}};
  j["rank"] = status.rank ? nlohmann::json(*status.rank) : nlohmann::json(nullptr);
  // Invalid UTF-8 in a worker's reason must not make the text unwritable.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool IsRetryableErrorCode(const std::string& error_code) {
  const auto code = ErrorCodeFromName(error_code);
  return code && InfoOf(*code).retryable;
}

}  // namespace dpo
