#include "worker/comm/collective_watchdog.h"

#include <fcntl.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

namespace dpo {
namespace {

constexpr auto kPoll = std::chrono::milliseconds(200);
constexpr auto kHeartbeatEvery = std::chrono::seconds(1);
// A heartbeat older than this means its rank's process is not running (stopped or gone).
constexpr int64_t kStaleHeartbeatMs = 3000;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string HeartbeatPath(const std::string& dir, int rank) {
  return (std::filesystem::path(dir) / (".heartbeat-rank-" + std::to_string(rank))).string();
}

struct Heartbeat {
  int64_t entered = 0, time_ms = 0;
};

// A rank's heartbeat file: "<collectives entered> <unix ms>"; nullopt when missing or torn.
std::optional<Heartbeat> ReadHeartbeat(const std::string& path) {
  std::ifstream in(path);
  Heartbeat beat;
  if (!(in >> beat.entered >> beat.time_ms)) return std::nullopt;
  return beat;
}

std::string Seconds(double s) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", s);
  return text;
}

}  // namespace

CollectiveWatchdog::Watch::~Watch() {
  if (watchdog_ != nullptr) watchdog_->Release(id_);
}

CollectiveWatchdog::CollectiveWatchdog(int rank, int world_size, CollectiveTimeoutOptions options, Backend backend)
    : rank_(rank), world_size_(world_size), options_(std::move(options)), backend_(std::move(backend)) {
  if (options_.seconds > 0 && world_size_ > 1) thread_ = std::thread([this] { Run(); });
}

CollectiveWatchdog::~CollectiveWatchdog() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  if (heartbeat_.valid()) ::unlink(HeartbeatPath(options_.heartbeat_dir, rank_).c_str());
}

CollectiveWatchdog::Watch CollectiveWatchdog::Start(const char* op) {
  return Watch(thread_.joinable() ? this : nullptr, Add(op, nullptr, /*watched=*/true));
}

void CollectiveWatchdog::StartUntil(const char* op, std::function<bool()> done) {
  Add(op, std::move(done), /*watched=*/false);
}

uint64_t CollectiveWatchdog::Add(const char* op, std::function<bool()> done, bool watched) {
  std::lock_guard lock(mutex_);
  ++entered_;
  if (!thread_.joinable()) return 0;
  const uint64_t id = ++next_id_;
  in_flight_[id] = {op, std::chrono::steady_clock::now(), std::move(done), watched};
  return id;
}

void CollectiveWatchdog::Release(uint64_t id) {
  std::lock_guard lock(mutex_);
  auto it = in_flight_.find(id);
  if (it == in_flight_.end()) return;
  it->second.watched = false;
  if (!it->second.done) in_flight_.erase(it);
}

void CollectiveWatchdog::Run() {
  const auto timeout = std::chrono::duration<double>(options_.seconds);
  // The first beat at once (the next ones once the loop's first poll finds them due): a rank
  // stopped in its first steps must have left one.
  auto next_heartbeat = std::chrono::steady_clock::now();
  auto last_poll = next_heartbeat;
  std::unique_lock lock(mutex_);
  const uint64_t entered_at_start = entered_;
  lock.unlock();
  WriteHeartbeat(entered_at_start);
  lock.lock();
  next_heartbeat += kHeartbeatEvery;
  while (!wake_.wait_for(lock, kPoll, [this] { return stop_; })) {
    const auto now = std::chrono::steady_clock::now();
    // A gap this long means this process itself was stopped (SIGSTOP, then SIGCONT from the
    // launcher tearing the job down): that time was not spent waiting for a peer, and a
    // resumed rank must not blame one (nor overwrite the status the waiting rank wrote).
    if (now - last_poll > std::chrono::milliseconds(kStaleHeartbeatMs)) {
      for (auto& [id, collective] : in_flight_) collective.start += now - last_poll;
    }
    last_poll = now;
    if (now >= next_heartbeat) {
      const uint64_t entered = entered_;
      lock.unlock();
      WriteHeartbeat(entered);
      lock.lock();
      // Until the file could be opened (rank 0 creates the output directory while the other
      // ranks wait at a barrier), try at every poll: a rank stopped early must have left a beat.
      next_heartbeat = now + (heartbeat_.valid() ? kHeartbeatEvery : kPoll);
    }
    const InFlight* oldest = nullptr;
    for (auto it = in_flight_.begin(); it != in_flight_.end();) {
      if (!it->second.watched && it->second.done && it->second.done()) {
        it = in_flight_.erase(it);
        continue;
      }
      if (oldest == nullptr || it->second.start < oldest->start) oldest = &it->second;
      ++it;
    }
    if (backend_.async_error) {
      const std::string error = backend_.async_error();
      if (!error.empty()) {
        FailJob(ErrorCode::kLostRank, "rank " + std::to_string(rank_) + ": " + error, -1);
      }
    }
    if (oldest != nullptr && now - oldest->start > timeout) {
      const auto [suspect, why] = Suspect();
      const double waited = std::chrono::duration<double>(now - oldest->start).count();
      FailJob(ErrorCode::kCollectiveTimeout,
              "rank " + std::to_string(rank_) + " waited " + Seconds(waited) + " in " + oldest->op +
                  " (train.collective_timeout_seconds: " + Seconds(options_.seconds) + ")" +
                  (why.empty() ? "" : "; " + why),
              suspect);
    }
  }
}

void CollectiveWatchdog::WriteHeartbeat(uint64_t entered) {
  if (options_.heartbeat_dir.empty()) return;
  if (!heartbeat_.valid()) {
    heartbeat_ =
        UniqueFd(::open(HeartbeatPath(options_.heartbeat_dir, rank_).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    if (!heartbeat_.valid()) return;  // best effort: the directory may appear later
  }
  // Fixed width, written at offset 0 in one call: a reader never sees a shorter, torn line.
  char line[48];
  const int n = std::snprintf(line, sizeof line, "%20" PRIu64 " %20" PRId64 "\n", entered, NowMs());
  if (::pwrite(heartbeat_.get(), line, static_cast<size_t>(n), 0) != n) heartbeat_ = UniqueFd();
}

std::pair<int, std::string> CollectiveWatchdog::Suspect() const {
  if (options_.heartbeat_dir.empty()) return {-1, ""};
  const int64_t now = NowMs();
  int stalest = -1, behind = -1;
  int64_t stalest_age = kStaleHeartbeatMs, fewest = static_cast<int64_t>(entered_);
  for (int r = 0; r < world_size_; ++r) {
    if (r == rank_) continue;
    const std::optional<Heartbeat> beat = ReadHeartbeat(HeartbeatPath(options_.heartbeat_dir, r));
    if (!beat) continue;  // not written yet, or a directory the ranks do not share
    if (now - beat->time_ms > stalest_age) {
      stalest = r;
      stalest_age = now - beat->time_ms;
    } else if (beat->entered < fewest) {
      behind = r;
      fewest = beat->entered;
    }
  }
  if (stalest >= 0) {
    return {stalest, "rank " + std::to_string(stalest) + " stopped responding (its heartbeat is " +
                         Seconds(stalest_age / 1000.0) + " old: stopped, hung or dead)"};
  }
  if (behind >= 0) {
    return {behind, "rank " + std::to_string(behind) + " is alive but behind (" + std::to_string(fewest) +
                        " collectives entered, rank " + std::to_string(rank_) + " " + std::to_string(entered_) + ")"};
  }
  return {-1, ""};
}

void CollectiveWatchdog::FailJob(ErrorCode code, const std::string& reason, int suspect) {
  std::fprintf(stderr, "dpo-worker: error: %s\n", reason.c_str());
  std::fflush(stderr);
  if (options_.on_failure) options_.on_failure(code, reason, suspect);
  if (backend_.abort) backend_.abort();
  std::_Exit(InfoOf(code).exit_code);
}

}  // namespace dpo
