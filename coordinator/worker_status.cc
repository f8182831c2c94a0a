#include "coordinator/worker_status.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/util/error.h"
#include "common/util/path_util.h"

namespace dpo {

namespace {

// The text of `name` in the directory `dir_fd` (AT_FDCWD: the working directory), at most
// `max_bytes`; nullopt when it does not exist (`why` empty) or cannot be used (`why` says why:
// not a regular file, too big, unreadable). Never opened blocking, so a FIFO put there cannot
// stall the caller; a symbolic link is not followed.
std::optional<std::string> ReadSmallFile(int dir_fd, const std::string& name, int64_t max_bytes, std::string& why) {
  why.clear();
  // O_NONBLOCK: opening a FIFO put there returns at once, and fstat then refuses it.
  const int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) why = name + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::string text;
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    why = name + ": not a regular file";
  } else if (info.st_size > max_bytes) {
    why = name + ": " + std::to_string(info.st_size) + " bytes, more than the " + std::to_string(max_bytes) +
          " it may have";
  } else {
    text.resize(static_cast<size_t>(max_bytes) + 1);
    size_t got = 0;
    for (ssize_t n; got < text.size() && (n = ::read(fd, text.data() + got, text.size() - got)) != 0;) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        why = name + ": " + std::strerror(errno);
        break;
      }
      got += static_cast<size_t>(n);
    }
    text.resize(got);
    if (why.empty() && got > static_cast<size_t>(max_bytes)) why = name + ": grew past the size limit";
  }
  ::close(fd);
  if (!why.empty()) return std::nullopt;
  return text;
}

// "rank-12.json" -> 12; nullopt for any other name.
std::optional<int> RankOfFileName(const std::string& name) {
  const std::string prefix = "rank-", suffix = ".json";
  if (!name.starts_with(prefix) || !name.ends_with(suffix)) return std::nullopt;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 6) return std::nullopt;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  return std::stoi(digits);
}

}  // namespace

std::optional<WorkerStatus> ReadWorkerStatus(const std::string& output_dir, std::string* problem) {
  std::string ignored;
  std::string& why = problem ? *problem : ignored;
  const auto text = ReadSmallFile(AT_FDCWD, JoinPath(output_dir, "status.json"), kMaxWorkerStatusBytes, why);
  if (!text) return std::nullopt;
  auto status = ParseWorkerStatus(*text);
  if (!status) why = JoinPath(output_dir, "status.json") + ": not a status object";
  return status;
}

std::vector<RankStatus> ReadRankStatuses(const std::string& output_dir) {
  std::vector<RankStatus> ranks;
  const std::string dir = JoinPath(output_dir, "ranks");
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir_fd < 0) return ranks;
  DIR* listing = ::fdopendir(dir_fd);  // owns dir_fd from here
  if (listing == nullptr) {
    ::close(dir_fd);
    return ranks;
  }
  // Entries looked at, bounded too: a folder full of other names must not make a poll slow.
  int entries = 0;
  while (const dirent* entry = ::readdir(listing)) {
    if (++entries > 2 * kMaxRankStatuses || static_cast<int>(ranks.size()) >= kMaxRankStatuses) break;
    const auto rank = RankOfFileName(entry->d_name);
    if (!rank) continue;
    std::string why;
    const auto text = ReadSmallFile(::dirfd(listing), entry->d_name, kMaxRankStatusBytes, why);
    auto status = text ? ParseRankStatus(*text) : std::nullopt;
    if (status && status->rank == *rank) ranks.push_back(std::move(*status));
  }
  ::closedir(listing);
  std::sort(ranks.begin(), ranks.end(), [](const RankStatus& a, const RankStatus& b) { return a.rank < b.rank; });
  return ranks;
}

std::optional<RankStatus> ParseRankStatus(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("rank") || !j["rank"].is_number_integer() || !j.contains("metrics") ||
      !j["metrics"].is_object()) {
    return std::nullopt;
  }
  RankStatus status;
  status.rank = j["rank"].get<int>();
  if (status.rank < 0) return std::nullopt;
  if (j.contains("step") && j["step"].is_number_integer()) status.step = j["step"].get<int64_t>();
  for (const auto& [key, value] : j["metrics"].items()) {
    if (value.is_number()) status.metrics[key] = value.get<double>();
  }
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
  nlohmann::json j = {{"state", status.state},
                      {"step", status.step},
                      {"total_steps", status.total_steps},
                      {"metrics", status.metrics},
                      {"error_code", status.error_code},
                      {"reason", status.reason}};
  j["rank"] = status.rank ? nlohmann::json(*status.rank) : nlohmann::json(nullptr);
  // Invalid UTF-8 in a worker's reason must not make the text unwritable.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool IsRetryableErrorCode(const std::string& error_code) {
  const auto code = ErrorCodeFromName(error_code);
  return code && InfoOf(*code).retryable;
}

}  // namespace dpo
