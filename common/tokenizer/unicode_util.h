// UTF-8 helpers shared by the tokenizer's stages: decoding code points, lossy repair of invalid
// UTF-8, and GPT-2's byte <-> printable-character table used by byte-level BPE.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dpo::tok {

// Decodes the code point at s[*pos] and advances *pos. Precondition: s is valid UTF-8.
char32_t NextCodePoint(std::string_view s, size_t* pos);
// Appends the UTF-8 encoding of `cp` to *out.
void AppendUtf8(char32_t cp, std::string* out);
// Byte length of the UTF-8 sequence that starts with lead byte `b` (1 for a stray byte).
inline size_t Utf8Length(unsigned char b) {
  return b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 1;
}

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
bool IsValidUtf8(std::string_view s);
// Replaces each maximal ill-formed subpart of `s` by U+FFFD, the Unicode-recommended practice
// that Rust's String::from_utf8_lossy and Python's bytes.decode(errors="replace") follow.
std::string Utf8Lossy(std::string_view s);

// Unicode White_Space, the class HF's regex engine (Oniguruma) uses for \s.
bool IsWhiteSpace(char32_t cp);

// GPT-2's bytes_to_unicode: every byte maps to one printable code point (printable Latin-1 bytes
// to themselves, the rest to U+0100 + n). ByteToChar is that map; CharToByte its inverse
// (-1 for a code point outside the table).
char32_t ByteToChar(uint8_t b);
int CharToByte(char32_t cp);

}  // namespace dpo::tok
