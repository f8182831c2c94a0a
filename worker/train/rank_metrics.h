// <output.dir>/ranks/rank-<R>.json: one rank's own training figures (step time, tokens/s,
// gradient communication and how much of it backward hid, peak memory, skipped steps), written
// by every rank after each logged step and exposed by the coordinator as Prometheus series
// labelled job_id and rank (format and names: docs/worker_status.md).
//
// Why a file per rank rather than an HTTP endpoint per rank: the ranks of a cluster job run on
// nodes Prometheus and the coordinator may not reach, and a port per rank would have to be
// chosen, published and freed; the output directory is already shared by every rank (it holds
// the checkpoints and the heartbeats), and the coordinator already reads status.json there.
// A rank that stops writing is visible as a step that no longer advances.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace dpo {

// Figures of one rank over one logging window (train.logging_steps steps).
struct RankMetrics {
  int64_t step = 0;              // optimizer steps done at the end of the window
  double step_seconds = 0;       // mean wall time of an optimizer step
  double tokens_per_second = 0;  // this rank's tokens (both sequences of each pair) per second
  // Mean seconds per step the gradient communication was in flight: the bucketed all-reduce
  // (replicated), or the all-gathers and reduce-scatters (train.sharding).
  double comm_seconds = 0;
  // The share of comm_seconds that compute did not wait for (1 - exposed / in flight; see
  // worker/comm/gradient_reducer.h). None when nothing was communicated (one rank).
  std::optional<double> comm_hidden_ratio;
  int64_t peak_memory_bytes = 0;  // CUDA's peak allocation on a GPU; peak resident set on a CPU
  int64_t skipped_steps = 0;      // non-finite steps skipped so far in the run (resumed ones too)
};

// The file's text: {"rank", "world_size", "step", "metrics": {step_seconds, tokens_per_second,
// comm_seconds, comm_hidden_ratio (absent when none), peak_memory_bytes, skipped_steps_total}}.
std::string RankMetricsJson(int rank, int world_size, const RankMetrics& metrics);

// <output_dir>/ranks/rank-<rank>.json.
std::string RankMetricsPath(const std::string& output_dir, int rank);

// Removes <output_dir>/ranks/rank-*.json that a previous run (maybe on more ranks) left, so the
// coordinator never shows a rank this run does not have. Rank 0 calls it once it holds the
// output directory's lock, before the other ranks start. Returns the number removed.
int RemoveRankMetrics(const std::string& output_dir);

// Writes one rank's file, atomically (temp file, fsync, rename): a reader sees a whole old or a
// whole new file. Throws dpo::Error (io) naming the path when it cannot be written.
class RankMetricsFile {
 public:
  RankMetricsFile(const std::string& output_dir, int rank, int world_size);
  void Write(const RankMetrics& metrics);

 private:
  const std::string path_;
  const int rank_;
  const int world_size_;
};

}  // namespace dpo
