// Precomputed reference log-probs (reference.mode: precomputed). One pass of the reference model
// over a prepared dataset stores each pair's chosen and rejected sequence log-prob sums in a
// safetensors file beside the dataset, named by a key that hashes the reference model's
// identity, the dataset's hashes and the options that change the numbers (ld_alpha, chunking
// does not). Later runs with the same key reuse the file, and training holds no reference model.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "common/data/batch.h"
#include "common/loss/dpo_loss.h"
#include "common/loss/sequence_logps.h"

namespace dpo {

class CausalLM;
class PreparedDataset;
class ProcessGroup;

class ReferenceCache {
 public:
  // Loads `path` if it exists and holds `dataset.size()` pairs; otherwise computes it: rank r
  // scores pairs r, r+W, ..., the ranks sum their parts (collective: every rank calls this),
  // and rank 0 writes the file atomically. `reference` may be null only when the file exists.
  static ReferenceCache LoadOrCompute(const std::string& path, CausalLM* reference, const PreparedDataset& dataset,
                                      ProcessGroup& group, int64_t batch_size, const CollateOptions& collate,
                                      bool packed, const SequenceLogpsOptions& logps_options,
                                      std::optional<double> ld_alpha);

  // The cache file name for a reference identity and dataset: "ref-logps-<16 hex>.safetensors".
  static std::string FileName(uint64_t reference_hash, const PreparedDataset& dataset, std::optional<double> ld_alpha);

  // Reference log-probs of the pairs `pair_indices` ([B] int64, CPU), on `device`.
  ReferenceLogps Lookup(const at::Tensor& pair_indices, c10::Device device) const;
  bool computed() const { return computed_; }

 private:
  at::Tensor chosen_;    // [N] fp32, CPU
  at::Tensor rejected_;  // [N] fp32, CPU
  bool computed_ = false;
};

}  // namespace dpo
