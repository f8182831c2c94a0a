// Unicode normalization forms (UAX #15) as HF tokenizers computes them: with the data of
// Unicode 9.0 (unicode_tables.h), the version of the crate HF normalizes with, not the machine's
// utf8proc. Code points that 9.0 did not assign pass through unchanged as starters (class 0, no
// decomposition), exactly as they do in HF, even where later versions give them a combining
// class (U+1DF6, U+1E4EC, ...).
#pragma once

#include <string>
#include <string_view>

namespace dpo::tok {

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };

// `text` (valid UTF-8) in normal form `form`. ASCII stretches are copied as they are.
std::string Normalize(std::string_view text, NormalForm form);

}  // namespace dpo::tok
