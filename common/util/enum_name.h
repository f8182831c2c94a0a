// Spellings of enum values, for options that are written as words (the job spec's keys, the
// engine's option structs): one table per enum, defined beside the enum, read both ways.
#pragma once

#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dpo {

template <typename E>
struct EnumName {
  E value;
  std::string_view name;
};

// `names` is a table of EnumName<E>: an array or a span.

// The spelling of `value`; every value of a table's enum must be in it (a logic_error otherwise).
template <typename Names, typename E>
std::string_view NameOf(const Names& names, E value) {
  for (const auto& n : names) {
    if (n.value == value) return n.name;
  }
  throw std::logic_error("enum value without a spelling");
}

// The value spelt `name`, or nullopt.
template <typename Names>
auto ValueOf(const Names& names, std::string_view name) -> std::optional<decltype(std::data(names)->value)> {
  for (const auto& n : names) {
    if (n.name == name) return n.value;
  }
  return std::nullopt;
}

// "a, b, c": the spellings, for messages.
template <typename Names>
std::string SpellingList(const Names& names) {
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + std::string(n.name);
  return list;
}

}  // namespace dpo
