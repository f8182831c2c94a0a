#include "common/config/spec_reader.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "common/config/job_spec.h"
#include "common/config/suggest.h"

namespace dpo {
namespace {

constexpr size_t kMaxQuoted = 40;  // longer values are cut in messages

std::string Quote(std::string_view text) {
  std::string out = "\"";
  if (text.size() > kMaxQuoted) {
    out.append(text.substr(0, kMaxQuoted));
    out += "...";
  } else {
    out.append(text);
  }
  return out + "\"";
}

// A plain scalar may carry a resolved core-schema tag (!!int, !!float, !!bool); "!" marks a
// quoted scalar and !!str forces a string.
bool IsQuotedOrString(const YAML::Node& node) { return node.Tag() == "!" || node.Tag() == "tag:yaml.org,2002:str"; }

}  // namespace

YAML::Mark ValueMark(const YAML::Node& node) { return node.IsNull() ? YAML::Mark::null_mark() : node.Mark(); }

void SpecReader::Problem(const YAML::Mark& given, std::string_view path, std::string_view message) {
  YAML::Mark mark = given;
  if (mark.is_null()) {
    for (const auto& [p, m] : marks_) {
      if (p == path) mark = m;
    }
  }
  std::string text = source_;
  if (!mark.is_null()) {
    text += ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
  }
  text += ": ";
  if (!path.empty()) {
    text.append(path);
    text += ": ";
  }
  text.append(message);
  const int line = mark.is_null() ? INT32_MAX : mark.line;
  const int column = mark.is_null() ? 0 : mark.column;
  problems_.push_back({line, column, std::move(text)});
}

void SpecReader::Problem(std::string_view path, std::string_view message) {
  Problem(YAML::Mark::null_mark(), path, message);
}

void SpecReader::ThrowIfAny() {
  if (problems_.empty()) return;
  std::stable_sort(problems_.begin(), problems_.end(), [](const Entry& a, const Entry& b) {
    return a.line != b.line ? a.line < b.line : a.column < b.column;
  });
  std::vector<std::string> lines;
  for (Entry& e : problems_) lines.push_back(std::move(e.text));
  throw JobSpecError(std::move(lines));
}

void SpecReader::RememberMark(const std::string& path, const YAML::Mark& mark) { marks_.emplace_back(path, mark); }

std::string SpecReader::Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return "null";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: return Quote(node.Scalar());
  }
  return "null";
}

bool SpecReader::ExpectPlainScalar(const YAML::Node& node, std::string_view path, std::string_view what) {
  if (node.IsScalar() && !IsQuotedOrString(node)) return true;
  Problem(ValueMark(node), path, "expected " + std::string(what) + ", got " + Describe(node));
  return false;
}

std::optional<int64_t> SpecReader::Int(const YAML::Node& node, std::string_view path) {
  if (!ExpectPlainScalar(node, path, "an integer")) return std::nullopt;
  std::string_view text = node.Scalar();
  if (text.size() > 1 && text[0] == '+') text.remove_prefix(1);
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range && end == text.data() + text.size()) {
    Problem(ValueMark(node), path, "integer " + Quote(node.Scalar()) + " is out of range");
    return std::nullopt;
  }
  if (ec != std::errc() || end != text.data() + text.size()) {
    Problem(ValueMark(node), path, "expected an integer, got " + Describe(node));
    return std::nullopt;
  }
  return value;
}

std::optional<double> SpecReader::Number(const YAML::Node& node, std::string_view path) {
  if (!ExpectPlainScalar(node, path, "a number")) return std::nullopt;
  std::string_view text = node.Scalar();
  if (text.size() > 1 && text[0] == '+') text.remove_prefix(1);
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
    Problem(ValueMark(node), path, "expected a finite number, got " + Describe(node));
    return std::nullopt;
  }
  return value;
}

std::optional<bool> SpecReader::Bool(const YAML::Node& node, std::string_view path) {
  if (!ExpectPlainScalar(node, path, "true or false")) return std::nullopt;
  const std::string& text = node.Scalar();
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  Problem(ValueMark(node), path, "expected true or false, got " + Describe(node));
  return std::nullopt;
}

std::optional<std::string> SpecReader::String(const YAML::Node& node, std::string_view path) {
  if (!node.IsScalar()) {
    Problem(ValueMark(node), path, "expected a string, got " + Describe(node));
    return std::nullopt;
  }
  return node.Scalar();
}

void SpecReader::ReportBadEnum(const YAML::Node& node, std::string_view path, std::string_view noun,
                               const std::string& text, const std::vector<std::string>& spellings) {
  std::string message = "unknown " + std::string(noun) + " " + Quote(text);
  if (std::optional<std::string> near = ClosestMatch(text, spellings)) {
    message += "; did you mean \"" + *near + "\"?";
  } else {
    message += "; expected one of";
    for (size_t i = 0; i < spellings.size(); ++i) message += (i ? ", " : " ") + spellings[i];
  }
  Problem(ValueMark(node), path, message);
}

MapReader::MapReader(SpecReader& reader, const YAML::Node& node, std::string path)
    : reader_(reader), path_(std::move(path)) {
  if (!node.IsDefined() || node.IsNull()) return;
  if (!node.IsMap()) {
    reader_.Problem(ValueMark(node), path_.empty() ? "spec" : path_,
                    "expected a mapping, got " + SpecReader::Describe(node));
    return;
  }
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) {
      reader_.Problem(kv.first.Mark(), path_.empty() ? "spec" : path_,
                      "keys must be strings, got " + SpecReader::Describe(kv.first));
      continue;
    }
    const std::string& key = kv.first.Scalar();
    const bool duplicate = std::any_of(items_.begin(), items_.end(), [&](const Item& item) { return item.key == key; });
    if (duplicate) {
      reader_.Problem(kv.first.Mark(), KeyPath(key), "duplicate key");
      continue;
    }
    items_.push_back({key, kv.first.Mark(), kv.second, false});
  }
}

std::string MapReader::KeyPath(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

std::optional<YAML::Node> MapReader::Take(std::string_view key) {
  for (Item& item : items_) {
    if (item.key != key) continue;
    item.taken = true;
    reader_.RememberMark(KeyPath(key), item.mark);
    return item.value;
  }
  return std::nullopt;
}

std::vector<MapReader::Unread> MapReader::Rest() const {
  std::vector<Unread> rest;
  for (const Item& item : items_) {
    if (!item.taken) rest.push_back({item.key, item.mark});
  }
  return rest;
}

}  // namespace dpo
