#include "common/tokenizer/pre_tokenizer.h"

#include <nlohmann/json.hpp>

#include "common/tokenizer/json_fields.h"
#include "common/tokenizer/regex.h"
#include "common/util/error.h"

namespace dpo::tok {

namespace {

// GPT-2's pattern, used by ByteLevel with use_regex (HF's ByteLevel pre-tokenizer).
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace

PreTokenizer::PreTokenizer(const nlohmann::json& node, const std::string& context) {
  if (!node.is_null()) Add(node, context);
}
PreTokenizer::~PreTokenizer() = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;

void PreTokenizer::Add(const nlohmann::json& node, const std::string& context) {
  if (!node.is_object()) Fail(context, "not an object");
  std::string type = RequiredString(node, "type", context);
  Step step;
  if (type == "Sequence") {
    ForEachSequenceStep(node, "pretokenizers", context,
                        [this](const auto& step, const std::string& at) { Add(step, at); });
    return;
  } else if (type == "Split") {
    step.kind = Kind::kSplit;
    const auto& pattern = node.value("pattern", nlohmann::json());
    if (pattern.contains("String") && pattern["String"].is_string()) {
      step.literal = pattern["String"].get<std::string>();
      if (step.literal.empty()) Fail(context + ".pattern.String", "empty");
    } else if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
      step.regex = std::make_shared<Regex>(pattern["Regex"].get<std::string>(), context + ".pattern");
    } else {
      Fail(context + ".pattern", "needs a String or Regex");
    }
    std::string behavior = RequiredString(node, "behavior", context);
    if (behavior == "Removed")
      step.behavior = Behavior::kRemoved;
    else if (behavior == "Isolated")
      step.behavior = Behavior::kIsolated;
    else if (behavior == "MergedWithPrevious")
      step.behavior = Behavior::kMergedWithPrevious;
    else if (behavior == "MergedWithNext")
      step.behavior = Behavior::kMergedWithNext;
    else if (behavior == "Contiguous")
      step.behavior = Behavior::kContiguous;
    else
      Fail(context + ".behavior", "unknown \"" + behavior + "\"");
    step.invert = node.value("invert", false);
  } else if (type == "ByteLevel") {
    step.kind = Kind::kByteLevel;
    step.add_prefix_space = node.value("add_prefix_space", true);
    if (node.value("use_regex", true)) step.regex = std::make_shared<Regex>(kGpt2Pattern, context);
    byte_level_ = true;
  } else if (type == "Metaspace") {
    step.kind = Kind::kMetaspace;
    step.replacement = RequiredString(node, "replacement", context);
    if (step.replacement.empty()) Fail(context + ".replacement", "empty");
    step.split = node.value("split", true);
    if (node.contains("prepend_scheme")) {
      std::string scheme = RequiredString(node, "prepend_scheme", context);
      if (scheme == "always")
        step.prepend = Prepend::kAlways;
      else if (scheme == "first")
        step.prepend = Prepend::kFirst;
      else if (scheme == "never")
        step.prepend = Prepend::kNever;
      else
        Fail(context + ".prepend_scheme", "unknown \"" + scheme + "\"");
    } else {
      step.prepend = node.value("add_prefix_space", true) ? Prepend::kAlways : Prepend::kNever;
    }
  } else {
    Fail(context + ".type", "unsupported pre_tokenizer \"" + type + "\"");
  }
  steps_.push_back(std::move(step));
}

void PreTokenizer::Split(const Step& step, std::string_view piece, std::vector<std::string_view>* out) const {
  // (start, end, is_delimiter) spans covering `piece`, as HF's Pattern::find_matches gives.
  struct Span {
    size_t b, e;
    bool match;
  };
  thread_local std::vector<Span> spans;
  spans.clear();
  size_t prev = 0;
  auto on_match = [&](size_t b, size_t e) {
    if (b != prev) spans.push_back({prev, b, false});
    spans.push_back({b, e, true});
    prev = e;
  };
  if (step.regex) {
    step.regex->FindAll(piece, on_match);
  } else {
    for (size_t hit; (hit = piece.find(step.literal, prev)) != std::string_view::npos;)
      on_match(hit, hit + step.literal.size());
  }
  if (prev != piece.size()) spans.push_back({prev, piece.size(), false});
  if (step.invert)
    for (Span& s : spans) s.match = !s.match;

  auto emit = [&](size_t b, size_t e) {
    if (e > b) out->push_back(piece.substr(b, e - b));
  };
  switch (step.behavior) {
    case Behavior::kRemoved:
      for (const Span& s : spans)
        if (!s.match) emit(s.b, s.e);
      break;
    case Behavior::kIsolated:
      for (const Span& s : spans) emit(s.b, s.e);
      break;
    case Behavior::kContiguous: {
      size_t i = 0;
      while (i < spans.size()) {
        size_t j = i + 1;
        while (j < spans.size() && spans[j].match == spans[i].match && spans[i].match) ++j;
        emit(spans[i].b, spans[j - 1].e);
        i = j;
      }
      break;
    }
    case Behavior::kMergedWithPrevious: {
      // A delimiter joins the piece before it.
      size_t start = 0;
      bool open = false;
      for (const Span& s : spans) {
        if (s.match) {
          emit(open ? start : s.b, s.e);
          open = false;
        } else {
          if (open) emit(start, s.b);
          start = s.b;
          open = true;
        }
      }
      if (open) emit(start, piece.size());
      break;
    }
    case Behavior::kMergedWithNext: {
      // A delimiter starts a new piece that runs up to the next delimiter.
      size_t start = 0;
      bool open = false;
      for (const Span& s : spans) {
        if (s.match && open) {
          emit(start, s.b);
          start = s.b;
        } else if (!open) {
          start = s.b;
          open = true;
        }
      }
      if (open) emit(start, piece.size());
      break;
    }
  }
}

void PreTokenizer::Apply(std::string_view span, bool at_start, std::vector<std::string_view>* words,
                         PieceArena* arena) const {
  size_t first = words->size();
  words->push_back(span);
  thread_local std::vector<std::string_view> next;
  for (const Step& step : steps_) {
    next.clear();
    for (size_t i = first; i < words->size(); ++i) {
      std::string_view piece = (*words)[i];
      bool piece_at_start = at_start && i == first;
      switch (step.kind) {
        case Kind::kSplit: Split(step, piece, &next); break;
        case Kind::kByteLevel:
          if (step.add_prefix_space && (piece.empty() || piece[0] != ' ')) {
            arena->push_back(" " + std::string(piece));
            piece = arena->back();
          }
          if (step.regex) {
            Step isolated;
            isolated.regex = step.regex;
            Split(isolated, piece, &next);
          } else if (!piece.empty()) {
            next.push_back(piece);
          }
          break;
        case Kind::kMetaspace: {
          std::string s;
          s.reserve(piece.size() + 8);
          for (char c : piece) {
            if (c == ' ')
              s += step.replacement;
            else
              s += c;
          }
          bool prepend = step.prepend == Prepend::kAlways || (step.prepend == Prepend::kFirst && piece_at_start);
          if (prepend && s.compare(0, step.replacement.size(), step.replacement) != 0) s.insert(0, step.replacement);
          arena->push_back(std::move(s));
          std::string_view rewritten = arena->back();
          if (step.split) {
            Step merged;
            merged.literal = step.replacement;
            merged.behavior = Behavior::kMergedWithNext;
            Split(merged, rewritten, &next);
          } else if (!rewritten.empty()) {
            next.push_back(rewritten);
          }
          break;
        }
      }
    }
    words->resize(first);
    words->insert(words->end(), next.begin(), next.end());
  }
}

}  // namespace dpo::tok
