// "Did you mean" for misspelt names: the closest candidate by edit distance, if close enough to
// be a plausible typo. Used for unknown keys and enum values of the job spec.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dpo {

// Optimal-string-alignment distance (Damerau-Levenshtein where a transposed pair of adjacent
// characters costs 1 and no substring is edited twice). Bytes, not code points.
size_t EditDistance(std::string_view a, std::string_view b);

// Largest distance still taken for a typo of `word`: 1 up to 4 bytes, 2 up to 8, else 3.
size_t TypoBudget(std::string_view word);

// The candidate closest to `word` within TypoBudget(word); the first one on ties. nullopt when
// none is close enough.
std::optional<std::string> ClosestMatch(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace dpo
