#include "common/tokenizer/normalizer.h"

#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include "common/tokenizer/json_fields.h"
#include "common/tokenizer/regex.h"
#include "common/tokenizer/unicode_normalize.h"
#include "common/tokenizer/unicode_util.h"
#include "common/util/error.h"

namespace dpo::tok {

namespace {

bool IsAscii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

void ReplaceAll(std::string* s, std::string_view from, std::string_view to) {
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

}  // namespace

Normalizer::Normalizer(const nlohmann::json& node, const std::string& context) {
  if (!node.is_null()) Add(node, context);
}
Normalizer::~Normalizer() = default;
Normalizer::Normalizer(Normalizer&&) noexcept = default;

void Normalizer::Add(const nlohmann::json& node, const std::string& context) {
  if (!node.is_object()) Fail(context, "not an object");
  std::string type = RequiredString(node, "type", context);
  Step step;
  if (type == "Sequence") {
    ForEachSequenceStep(node, "normalizers", context,
                        [this](const auto& step, const std::string& at) { Add(step, at); });
    return;
  } else if (type == "NFC") {
    step.kind = Kind::kNfc;
  } else if (type == "NFD") {
    step.kind = Kind::kNfd;
  } else if (type == "NFKC") {
    step.kind = Kind::kNfkc;
  } else if (type == "NFKD") {
    step.kind = Kind::kNfkd;
  } else if (type == "Lowercase") {
    step.kind = Kind::kLowercase;
  } else if (type == "Prepend") {
    step.kind = Kind::kPrepend;
    step.a = RequiredString(node, "prepend", context);
  } else if (type == "Replace") {
    step.kind = Kind::kReplace;
    step.b = RequiredString(node, "content", context);
    const auto& pattern = node.value("pattern", nlohmann::json());
    if (pattern.contains("String") && pattern["String"].is_string()) {
      step.a = pattern["String"].get<std::string>();
    } else if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
      step.regex = std::make_shared<Regex>(pattern["Regex"].get<std::string>(), context + ".pattern");
    } else {
      Fail(context + ".pattern", "needs a String or Regex");
    }
  } else if (type == "Strip") {
    step.kind = Kind::kStrip;
    step.left = node.value("strip_left", false);
    step.right = node.value("strip_right", false);
  } else {
    Fail(context + ".type", "unsupported normalizer \"" + type + "\"");
  }
  steps_.push_back(std::move(step));
}

std::string Normalizer::Apply(std::string_view text) const {
  std::string s(text);
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::kNfc:
        if (!IsAscii(s)) s = Normalize(s, NormalForm::kNfc);
        break;
      case Kind::kNfd:
        if (!IsAscii(s)) s = Normalize(s, NormalForm::kNfd);
        break;
      case Kind::kNfkc:
        if (!IsAscii(s)) s = Normalize(s, NormalForm::kNfkc);
        break;
      case Kind::kNfkd:
        if (!IsAscii(s)) s = Normalize(s, NormalForm::kNfkd);
        break;
      case Kind::kLowercase: {
        // HF lowercases per code point with Rust's char::to_lowercase: the simple mapping,
        // except U+0130 whose full mapping (SpecialCasing.txt) is "i" + U+0307.
        std::string out;
        out.reserve(s.size());
        for (size_t i = 0; i < s.size();) {
          char32_t cp = NextCodePoint(s, &i);
          if (cp == 0x130) {
            out += "i\xCC\x87";
          } else {
            AppendUtf8(utf8proc_tolower(cp), &out);
          }
        }
        s = std::move(out);
        break;
      }
      case Kind::kPrepend:
        // HF prepends only to a non-empty string.
        if (!s.empty()) s.insert(0, step.a);
        break;
      case Kind::kReplace:
        if (step.regex) {
          std::string out;
          size_t prev = 0;
          step.regex->FindAll(s, [&](size_t b, size_t e) {
            out.append(s, prev, b - prev);
            out += step.b;
            prev = e;
          });
          out.append(s, prev);
          s = std::move(out);
        } else {
          ReplaceAll(&s, step.a, step.b);
        }
        break;
      case Kind::kStrip: {
        size_t b = 0, e = s.size();
        if (step.left) {
          while (b < e) {
            size_t next = b;
            if (!IsWhiteSpace(NextCodePoint(s, &next))) break;
            b = next;
          }
        }
        if (step.right) {
          while (e > b) {
            size_t start = e - 1;
            while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
            size_t next = start;
            if (!IsWhiteSpace(NextCodePoint(s, &next))) break;
            e = start;
          }
        }
        s = s.substr(b, e - b);
        break;
      }
    }
  }
  return s;
}

}  // namespace dpo::tok
