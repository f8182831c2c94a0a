// One DPO forward pass over a PairBatch: the model's final hidden states, then the chunked
// completion log-probs against its lm_head (never the full [2B, T, V] logits).
#pragma once

#include <optional>

#include "common/loss/dpo_loss.h"
#include "common/loss/sequence_logps.h"
#include "worker/train/pair_batch.h"

namespace dpo {

class CausalLM;

SequenceLogps ForwardLogps(CausalLM& model, const PairBatch& batch, const SequenceLogpsOptions& options);

// The reference's sequence log-prob sums for a batch (no grad), reduced as TRL reduces them
// (LD-DPO weighting when ld_alpha is set).
ReferenceLogps ReferenceForward(CausalLM& reference, const PairBatch& batch, const SequenceLogpsOptions& options,
                                std::optional<double> ld_alpha);

}  // namespace dpo
