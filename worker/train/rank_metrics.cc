#include "worker/train/rank_metrics.h"

#include <dirent.h>

#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/util/atomic_file.h"
#include "common/util/path_util.h"

namespace dpo {
namespace {

constexpr const char* kRanksDir = "ranks";

// "rank-12.json" -> true; what RankMetricsPath names, and nothing else a user may keep there.
bool IsRankMetricsName(const std::string& name) {
  const std::string prefix = "rank-", suffix = ".json";
  if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) || !name.ends_with(suffix)) {
    return false;
  }
  for (size_t i = prefix.size(); i < name.size() - suffix.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  return true;
}

nlohmann::json Finite(double value) { return std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr); }

}  // namespace

std::string RankMetricsJson(int rank, int world_size, const RankMetrics& m) {
  nlohmann::json metrics = {
      {"step_seconds", Finite(m.step_seconds)}, {"tokens_per_second", Finite(m.tokens_per_second)},
      {"comm_seconds", Finite(m.comm_seconds)}, {"peak_memory_bytes", m.peak_memory_bytes},
      {"skipped_steps_total", m.skipped_steps},
  };
  if (m.comm_hidden_ratio) metrics["comm_hidden_ratio"] = Finite(*m.comm_hidden_ratio);
  const nlohmann::json j = {{"rank", rank}, {"world_size", world_size}, {"step", m.step}, {"metrics", metrics}};
  return j.dump() + "\n";
}

std::string RankMetricsPath(const std::string& output_dir, int rank) {
  return JoinPath(JoinPath(output_dir, kRanksDir), "rank-" + std::to_string(rank) + ".json");
}

int RemoveRankMetrics(const std::string& output_dir) {
  const std::string dir = JoinPath(output_dir, kRanksDir);
  const std::unique_ptr<DIR, int (*)(DIR*)> listing(::opendir(dir.c_str()), &::closedir);
  if (!listing) return 0;  // no previous run wrote any
  std::vector<std::string> stale;
  while (const dirent* entry = ::readdir(listing.get())) {
    if (IsRankMetricsName(entry->d_name)) stale.push_back(JoinPath(dir, entry->d_name));
  }
  for (const std::string& path : stale) RemoveFileIfExists(path);
  return static_cast<int>(stale.size());
}

RankMetricsFile::RankMetricsFile(const std::string& output_dir, int rank, int world_size)
    : path_(RankMetricsPath(output_dir, rank)), rank_(rank), world_size_(world_size) {
  MakeDirectories(JoinPath(output_dir, kRanksDir));
}

void RankMetricsFile::Write(const RankMetrics& metrics) {
  WriteFileAtomically(path_, RankMetricsJson(rank_, world_size_, metrics));
}

}  // namespace dpo
