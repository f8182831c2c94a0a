// The DPO training loop of one rank. Read top to bottom in trainer.cc:
//   set-up:  device, tokenizer, prepared data (rank 0 prepares, the others wait and map it),
//            policy and reference (or precomputed reference log-probs), AdamW, schedule, resume
//   a step:  for each micro-batch: policy forward (chosen and rejected in one pass), reference
//            log-probs, DPO loss / accumulation steps, backward; then average gradients over
//            ranks, clip, skip the step if anything is non-finite, AdamW update
//   around:  metrics every logging_steps, eval every eval_steps, checkpoints every save_steps
//
// Every rank runs the same number of micro-batches and collectives in the same order.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/config/job_spec.h"
#include "worker/train/rank_metrics.h"

namespace dpo {

class ProcessGroup;

struct TrainSummary {
  int64_t steps = 0;          // optimizer steps done (including resumed ones)
  int64_t skipped_steps = 0;  // non-finite steps skipped
  double last_loss = 0;       // mean loss of the last logged window
  std::string last_checkpoint;
  bool interrupted = false;  // stopped early by TrainHooks::stop_requested, after a checkpoint
};

struct TrainHooks {
  // Called on every rank once set-up knows the step (resumed) and total, with no metrics, then
  // after each logged step with that step's train metrics line. Default: none.
  std::function<void(int64_t step, int64_t total_steps, const std::map<std::string, double>& metrics)> on_progress;
  // Called on every rank after each logged step with this rank's own figures over the logging
  // window (worker/train/rank_metrics.h). Default: none.
  std::function<void(const RankMetrics& metrics)> on_rank_metrics;
  // Polled by every rank at each step boundary; when it is true on any rank (one all-reduce per
  // step agrees on it), every rank saves a checkpoint of that step and training returns with
  // `interrupted` set. Default: none (no stopping, no extra collective).
  std::function<bool()> stop_requested;
};

// Runs the job. Throws dpo::Error with a one-line reason on failure (bad input, K consecutive
// non-finite steps, I/O).
TrainSummary RunTraining(const JobSpec& spec, ProcessGroup& group, int local_rank, const TrainHooks& hooks = {});

}  // namespace dpo
