// Fuzzes Tokenizer::Encode and Decode on arbitrary bytes with two small fixed tokenizers: a
// byte-level BPE (Llama-3 style: Split regex + ByteLevel, added tokens) and a SentencePiece-style
// BPE (Prepend/Replace normalizer, NFC, byte fallback, template BOS).
//
// Input: byte 0 picks the tokenizer (bit 0) and add_special_tokens (bit 1); the rest is text.
// Invalid UTF-8 is defined behaviour: Encode repairs it (maximal subparts -> U+FFFD) first.
// Checked: no crash; every id is in range; the byte-level tokenizer round-trips exactly, i.e.
// Decode(Encode(x)) == Utf8Lossy(x) (unless x holds the lstrip/rstrip token); decoded text is valid UTF-8.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/tokenizer/tokenizer.h"
#include "common/tokenizer/unicode_util.h"

namespace {

// Byte-level: the 256 byte characters get ids 0..255 (generated below), plus a few merges.
std::string ByteLevelJson() {
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    dpo::tok::AppendUtf8(dpo::tok::ByteToChar(static_cast<uint8_t>(b)), &ch);
    std::string esc;
    for (char c : ch) {
      if (c == '"' || c == '\\') esc += '\\';
      esc += c;
    }
    vocab += "\"" + esc + "\":" + std::to_string(b) + ",";
  }
  vocab +=
      R"("he":256,"ll":257,"hell":258,"hello":259,"\u0120w":260,"or":261,"\u0120wor":262,"ld":263,"\u0120world":264,"\u0120\u0120":265)";
  return R"({"added_tokens":[{"id":266,"content":"<|end|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
{"id":267,"content":"<|end|>x","single_word":true,"lstrip":true,"rstrip":true,"normalized":false,"special":false}],
"normalizer":null,
"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]},
"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<|end|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<|end|>":{"id":"<|end|>","ids":[266],"tokens":["<|end|>"]}}},
"decoder":{"type":"ByteLevel"},
"model":{"type":"BPE","ignore_merges":true,"vocab":{)" +
         vocab +
         R"(},"merges":["h e","l l","he ll","hell o","\u0120 w","o r","\u0120w or","l d","\u0120wor ld","\u0120 \u0120"]}})";
}

std::string SentencePieceJson() {
  std::string vocab = R"("<unk>":0,"<s>":1,"</s>":2,)";
  char hex[16];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(hex, sizeof(hex), "\"<0x%02X>\":%d,", b, 3 + b);
    vocab += hex;
  }
  vocab += R"("\u2581":259,"h":260,"i":261,"\u2581h":262,"\u2581hi":263,"\u00e9":264,"\u2581\u2581":265)";
  return R"({"added_tokens":[{"id":1,"content":"<s>","special":true,"normalized":false},{"id":2,"content":"</s>","special":true,"normalized":false}],
"normalizer":{"type":"Sequence","normalizers":[{"type":"NFC"},{"type":"Prepend","prepend":"\u2581"},{"type":"Replace","pattern":{"String":" "},"content":"\u2581"}]},
"pre_tokenizer":null,
"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"\u2581"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
"model":{"type":"BPE","unk_token":"<unk>","fuse_unk":true,"byte_fallback":true,"vocab":{)" +
         vocab + R"(},"merges":["\u2581 h","\u2581h i","\u2581 \u2581"]}})";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto byte_level = dpo::Tokenizer::FromJson(ByteLevelJson(), "", "byte_level.json");
  static const auto sentencepiece = dpo::Tokenizer::FromJson(SentencePieceJson(), "", "sp.json");
  if (size == 0) return 0;
  const bool use_sp = data[0] & 1;
  const bool add_special = data[0] & 2;
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const dpo::Tokenizer& tok = use_sp ? *sentencepiece : *byte_level;

  std::vector<dpo::TokenId> ids = tok.Encode(text, add_special);
  for (dpo::TokenId id : ids)
    if (id < 0 || static_cast<size_t>(id) >= tok.vocab_size()) std::abort();
  std::string decoded = tok.Decode(ids, /*skip_special_tokens=*/false);
  if (!dpo::tok::IsValidUtf8(decoded)) std::abort();
  // "<|end|>x" strips the whitespace around it (lstrip/rstrip), so it alone may lose bytes.
  if (!use_sp && text.find("<|end|>x") == std::string_view::npos) {
    std::string expected = (add_special ? "<|end|>" : "") + dpo::tok::Utf8Lossy(text);
    if (decoded != expected) std::abort();
  }
  tok.Decode(ids, /*skip_special_tokens=*/true);
  return 0;
}
