// Training metrics out of the worker: one JSON object per line in <output.dir>/metrics.jsonl
// (TRL's metric names: loss, grad_norm, learning_rate, rewards/chosen, rewards/rejected,
// rewards/accuracies, rewards/margins, logps/chosen, logps/rejected, logits/chosen,
// logits/rejected, plus tokens/s, pairs/s and padding_fraction), and a one-line progress bar
// on stderr with the loss, reward accuracy and ETA.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

namespace dpo {

class MetricsLog {
 public:
  // Appends to `path` (created if missing), so a resumed run continues the same file. An empty
  // path writes no file. Throws dpo::Error naming the path if it cannot be opened.
  explicit MetricsLog(const std::string& path, bool show_progress);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // Writes {"step": step, "epoch": epoch, "split": split, <metrics>...} and flushes, so a killed
  // job loses no logged line.
  void Write(int64_t step, double epoch, const std::string& split, const std::map<std::string, double>& metrics);

  // Redraws the progress bar: step/total, loss, rewards/accuracies, ETA from the mean step time
  // since the first call.
  void Progress(int64_t step, int64_t total_steps, double loss, double accuracy);
  // Ends the progress line.
  void Finish();

 private:
  FILE* file_ = nullptr;
  bool show_progress_;
  bool progress_started_ = false;
  int64_t first_step_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace dpo
