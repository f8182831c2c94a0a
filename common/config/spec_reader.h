// Reading a YAML document while collecting every problem instead of stopping at the first: the
// job spec parser reports all of a file's mistakes in one error. Internal to common/config.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/util/enum_name.h"

namespace dpo {

// Where a value is, for messages. yaml-cpp places an empty (null) value at the next token, so a
// null gives the null mark, which SpecReader::Problem replaces by its key's position.
YAML::Mark ValueMark(const YAML::Node& node);

class SpecReader {
 public:
  explicit SpecReader(std::string source) : source_(std::move(source)) {}

  // Records "<source>:<line>:<col>: <path>: <message>". A null mark means the position
  // remembered for `path`, if any; else the problem has none. ThrowIfAny orders problems by
  // position, position-less ones last.
  void Problem(const YAML::Mark& mark, std::string_view path, std::string_view message);
  void Problem(std::string_view path, std::string_view message);
  bool ok() const { return problems_.empty(); }
  // Throws JobSpecError with the problems, if there are any.
  void ThrowIfAny();

  void RememberMark(const std::string& path, const YAML::Mark& mark);

  // Conversions of a present, non-null scalar. A wrong type is reported ("expected an integer,
  // got "ten"") and gives nullopt. Numbers and booleans must be plain (unquoted) scalars.
  std::optional<int64_t> Int(const YAML::Node& node, std::string_view path);
  std::optional<double> Number(const YAML::Node& node, std::string_view path);
  std::optional<bool> Bool(const YAML::Node& node, std::string_view path);
  std::optional<std::string> String(const YAML::Node& node, std::string_view path);

  template <typename E>
  std::optional<E> Enum(const YAML::Node& node, std::string_view path, std::span<const EnumName<E>> names,
                        std::string_view noun = "value") {
    std::optional<std::string> text = String(node, path);
    if (!text) return std::nullopt;
    std::vector<std::string> spellings;
    for (const EnumName<E>& n : names) {
      if (n.name == *text) return n.value;
      spellings.emplace_back(n.name);
    }
    ReportBadEnum(node, path, noun, *text, spellings);
    return std::nullopt;
  }

  // How a node reads in a message: "ten" quoted, "a list", "a mapping", "null".
  static std::string Describe(const YAML::Node& node);

 private:
  struct Entry {
    int line;
    int column;
    std::string text;
  };
  void ReportBadEnum(const YAML::Node& node, std::string_view path, std::string_view noun, const std::string& text,
                     const std::vector<std::string>& spellings);
  bool ExpectPlainScalar(const YAML::Node& node, std::string_view path, std::string_view what);

  std::string source_;
  std::vector<Entry> problems_;
  std::vector<std::pair<std::string, YAML::Mark>> marks_;
};

// The entries of one YAML mapping, taken by key in any order. Non-string and duplicate keys are
// reported on construction; Rest() lists the keys never taken (the unknown ones).
class MapReader {
 public:
  // `node` may be absent (an empty section) or null; any other non-mapping is reported.
  MapReader(SpecReader& reader, const YAML::Node& node, std::string path);

  // The value of `key` (a null node for `key:`), or nullopt when absent. Remembers the key's
  // position under "<path>.<key>": problems about that path without a position of their own
  // (null values, cross-field checks) are placed there.
  std::optional<YAML::Node> Take(std::string_view key);
  const std::string& path() const { return path_; }
  std::string KeyPath(std::string_view key) const;

  struct Unread {
    std::string key;
    YAML::Mark mark;
  };
  std::vector<Unread> Rest() const;

 private:
  struct Item {
    std::string key;
    YAML::Mark mark;
    YAML::Node value;
    bool taken = false;
  };
  SpecReader& reader_;
  std::string path_;
  std::vector<Item> items_;
};

}  // namespace dpo
