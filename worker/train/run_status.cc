#include "worker/train/run_status.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/util/atomic_file.h"

namespace dpo {
namespace {

const char* StateName(RunState state) {
  switch (state) {
    case RunState::kRunning: return "running";
    case RunState::kSucceeded: return "succeeded";
    case RunState::kFailed: return "failed";
    case RunState::kInterrupted: return "interrupted";
  }
  return "failed";
}

}  // namespace

std::string RunStatusJson(const RunStatus& status) {
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& [key, value] : status.metrics) {
    metrics[key] = std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
  }
  nlohmann::json j = {
      {"state", StateName(status.state)},
      {"step", status.step},
      {"total_steps", status.total_steps},
      {"metrics", metrics},
      {"error_code", status.error_code ? nlohmann::json(InfoOf(*status.error_code).name) : nlohmann::json(nullptr)},
      {"reason", status.reason},
      {"rank", status.rank ? nlohmann::json(*status.rank) : nlohmann::json(nullptr)},
  };
  // Invalid UTF-8 in a reason (a file name, a data line) is replaced, never a throw.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

RunStatusFile::RunStatusFile(std::string output_dir, int rank)
    : path_((std::filesystem::path(output_dir) / "status.json").string()), rank_(rank) {}

void RunStatusFile::Progress(int64_t step, int64_t total_steps, const std::map<std::string, double>& metrics) {
  std::lock_guard lock(mutex_);
  status_.step = step;
  status_.total_steps = total_steps;
  if (!metrics.empty()) status_.metrics = metrics;
  if (rank_ == 0) Write();
}

void RunStatusFile::Finish(RunState state, std::optional<ErrorCode> code, const std::string& reason,
                           std::optional<int> rank) {
  std::lock_guard lock(mutex_);
  status_.state = state;
  status_.error_code = code;
  status_.reason = reason;
  status_.rank = rank;
  try {
    Write();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dpo-worker: cannot write %s: %s\n", path_.c_str(), e.what());
  }
}

void RunStatusFile::Write() { WriteFileAtomically(path_, RunStatusJson(status_)); }

}  // namespace dpo
