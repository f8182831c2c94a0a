// What a job spec's data section asks of common/data: the tokenize options and the prepared file
// of each source. Shared by dpo-worker and dpo-coordinator, so that a file the coordinator
// prepares ahead of a job is the very file the worker then maps (and reuses, not re-tokenizes).
#pragma once

#include <string>

#include "common/config/job_spec.h"
#include "common/data/pair_tokenizer.h"
#include "common/data/prepared_dataset.h"

namespace dpo {

class Tokenizer;

TokenizeOptions TokenizeOptionsFromSpec(const DataSection& data);

// <prepared_dir>/<file name>.<hash of the source's absolute path>.prepared
std::string PreparedPath(const DataSection& data, const std::string& source);

// Tokenizes `source` into PreparedPath (creating prepared_dir), or reuses the file when its
// header matches (same tokenizer, source and options). Throws dpo::Error naming file:line on bad
// data (on_error: fail) and the source when no usable pair remains.
PrepareResult PrepareForSpec(const Tokenizer& tokenizer, const DataSection& data, const std::string& source);

}  // namespace dpo
