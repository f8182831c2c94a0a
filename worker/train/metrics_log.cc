#include "worker/train/metrics_log.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/util/error.h"

namespace dpo {

MetricsLog::MetricsLog(const std::string& path, bool show_progress) : show_progress_(show_progress) {
  if (path.empty()) return;
  file_ = std::fopen(path.c_str(), "a");
  if (file_ == nullptr) Fail(path, std::string("cannot open metrics file: ") + std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  Finish();
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsLog::Write(int64_t step, double epoch, const std::string& split,
                       const std::map<std::string, double>& metrics) {
  if (file_ == nullptr) return;
  nlohmann::json line = {{"step", step}, {"epoch", epoch}, {"split", split}};
  for (const auto& [name, value] : metrics) {
    // JSON has no NaN/Inf; a non-finite value is written as null so the line stays parseable.
    line[name] = std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
  }
  const std::string text = line.dump() + "\n";
  std::fwrite(text.data(), 1, text.size(), file_);
  std::fflush(file_);
}

void MetricsLog::Progress(int64_t step, int64_t total_steps, double loss, double accuracy) {
  if (!show_progress_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!progress_started_) {
    progress_started_ = true;
    first_step_ = step - 1;
    start_ = now;
  }
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const int64_t done = step - first_step_;
  const double eta = done > 0 ? elapsed / done * static_cast<double>(total_steps - step) : 0.0;
  constexpr int kWidth = 24;
  const int filled = total_steps > 0 ? static_cast<int>(kWidth * step / total_steps) : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r[%s] %lld/%lld loss %.4f acc %.3f eta %02d:%02d ", bar.c_str(), static_cast<long long>(step),
               static_cast<long long>(total_steps), loss, accuracy, static_cast<int>(eta) / 60,
               static_cast<int>(eta) % 60);
  std::fflush(stderr);
}

void MetricsLog::Finish() {
  if (progress_started_) std::fprintf(stderr, "\n");
  progress_started_ = false;
}

}  // namespace dpo
