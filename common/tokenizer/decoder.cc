#include "common/tokenizer/decoder.h"

#include <nlohmann/json.hpp>

#include "common/tokenizer/json_fields.h"
#include "common/tokenizer/unicode_util.h"
#include "common/util/error.h"

namespace dpo::tok {

namespace {

void ReplaceAll(std::string* s, const std::string& from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s->find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(*s, pos, hit - pos);
    out += to;
  }
  if (pos == 0) return;
  out.append(*s, pos);
  *s = std::move(out);
}

// "<0xNN>" -> NN, else -1 (HF's ByteFallback test: six bytes, "<0x" prefix, ">" suffix).
int ByteToken(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    char c = t[i];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                   : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

}  // namespace

Decoder::Decoder(const nlohmann::json& node, const std::string& context) {
  if (!node.is_null()) {
    present_ = true;
    Add(node, context);
  }
}

void Decoder::Add(const nlohmann::json& node, const std::string& context) {
  if (!node.is_object()) Fail(context, "not an object");
  std::string type = RequiredString(node, "type", context);
  Step step;
  if (type == "Sequence") {
    ForEachSequenceStep(node, "decoders", context, [this](const auto& step, const std::string& at) { Add(step, at); });
    return;
  } else if (type == "ByteLevel") {
    step.kind = Kind::kByteLevel;
  } else if (type == "Metaspace") {
    step.kind = Kind::kMetaspace;
    step.a = RequiredString(node, "replacement", context);
    if (step.a.empty()) Fail(context + ".replacement", "empty");
    if (node.contains("prepend_scheme"))
      step.prepend = RequiredString(node, "prepend_scheme", context) != "never";
    else
      step.prepend = node.value("add_prefix_space", true);
  } else if (type == "Replace") {
    step.kind = Kind::kReplace;
    const auto& pattern = node.value("pattern", nlohmann::json());
    if (!pattern.contains("String") || !pattern["String"].is_string())
      Fail(context + ".pattern", "only a String pattern is supported in a Replace decoder");
    step.a = pattern["String"].get<std::string>();
    step.b = RequiredString(node, "content", context);
  } else if (type == "ByteFallback") {
    step.kind = Kind::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = Kind::kFuse;
  } else if (type == "Strip") {
    step.kind = Kind::kStrip;
    step.a = RequiredString(node, "content", context);
    if (step.a.empty()) Fail(context + ".content", "empty");
    step.start = node.value("start", 0);
    step.stop = node.value("stop", 0);
  } else {
    Fail(context + ".type", "unsupported decoder \"" + type + "\"");
  }
  steps_.push_back(std::move(step));
}

std::string Decoder::Decode(std::vector<std::string> tokens) const {
  if (!present_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::kByteLevel: {
        // Each token's characters map back to bytes; a token with a character outside the
        // table contributes its UTF-8 bytes unchanged. The whole becomes one lossy string.
        std::string bytes;
        for (const std::string& t : tokens) {
          size_t mark = bytes.size();
          bool ok = true;
          for (size_t i = 0; i < t.size() && ok;) {
            int b = CharToByte(NextCodePoint(t, &i));
            if (b < 0)
              ok = false;
            else
              bytes.push_back(static_cast<char>(b));
          }
          if (!ok) {
            bytes.resize(mark);
            bytes += t;
          }
        }
        tokens.assign(1, Utf8Lossy(bytes));
        break;
      }
      case Kind::kMetaspace:
        // HF drops every replacement character of the first token (not only a leading one)
        // unless prepend_scheme is "never"; elsewhere each becomes a space.
        for (size_t i = 0; i < tokens.size(); ++i) ReplaceAll(&tokens[i], step.a, i == 0 && step.prepend ? "" : " ");
        break;
      case Kind::kReplace:
        for (std::string& t : tokens) ReplaceAll(&t, step.a, step.b);
        break;
      case Kind::kByteFallback: {
        std::vector<std::string> out;
        std::string pending;
        auto flush = [&] {
          if (pending.empty()) return;
          if (IsValidUtf8(pending)) {
            out.push_back(pending);
          } else {
            for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
          }
          pending.clear();
        };
        for (std::string& t : tokens) {
          int b = ByteToken(t);
          if (b >= 0) {
            pending.push_back(static_cast<char>(b));
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case Kind::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.clear();
        tokens.push_back(std::move(all));
        break;
      }
      case Kind::kStrip:
        for (std::string& t : tokens) {
          size_t b = 0, e = t.size();
          for (size_t k = 0; k < step.start && t.compare(b, step.a.size(), step.a) == 0 && b + step.a.size() <= e; ++k)
            b += step.a.size();
          for (size_t k = 0;
               k < step.stop && e >= b + step.a.size() && t.compare(e - step.a.size(), step.a.size(), step.a) == 0; ++k)
            e -= step.a.size();
          t = t.substr(b, e - b);
        }
        break;
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace dpo::tok
