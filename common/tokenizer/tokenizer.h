// A Hugging Face tokenizer.json tokenizer, exact to HF `tokenizers` (the oracle in tests).
// Supports byte-level BPE (Llama-3, Qwen2/3, GPT-2) and SentencePiece-style BPE with byte
// fallback (Llama-2, Mistral), NFC, added/special tokens, and BOS/EOS from tokenizer_config.json.
//
// Thread-safety: a loaded Tokenizer is immutable; Encode/Decode may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dpo {

using TokenId = int32_t;

class Tokenizer {
 public:
  // Loads `path`: a tokenizer.json, or a directory holding tokenizer.json and (optionally)
  // tokenizer_config.json. Throws dpo::Error naming the file and field on bad input.
  static std::unique_ptr<Tokenizer> Load(const std::string& path);
  // Builds from the contents of tokenizer.json and tokenizer_config.json (empty: none). `name`
  // stands for the file in error messages. For tests, fuzzing and embedded tokenizers.
  static std::unique_ptr<Tokenizer> FromJson(std::string_view tokenizer_json, std::string_view config_json,
                                             const std::string& name);
  virtual ~Tokenizer() = default;

  // Encodes UTF-8 text. With add_special_tokens, adds BOS/EOS as tokenizer_config.json says
  // (add_bos_token / add_eos_token, or the post-processor's template); otherwise adds nothing.
  // Invalid UTF-8 (HF only accepts str) is first repaired: each maximal ill-formed subpart
  // becomes U+FFFD, as Python's bytes.decode(errors="replace") does, so
  // Encode(b) == HF.encode(b.decode("utf-8", "replace")). Throws dpo::Error naming the file and
  // regex when a regex gives up on pathological text (PCRE2's match limit).
  virtual std::vector<TokenId> Encode(std::string_view text, bool add_special_tokens) const = 0;
  // Decodes ids to text. skip_special_tokens drops ids of special added tokens.
  virtual std::string Decode(const std::vector<TokenId>& ids, bool skip_special_tokens) const = 0;

  virtual std::optional<TokenId> bos_id() const = 0;
  virtual std::optional<TokenId> eos_id() const = 0;
  virtual std::optional<TokenId> pad_id() const = 0;
  // Id of a token string (vocabulary or added token), if any.
  virtual std::optional<TokenId> TokenToId(std::string_view token) const = 0;
  virtual size_t vocab_size() const = 0;
  // The "chat_template" string of tokenizer_config.json, empty if none.
  virtual const std::string& chat_template() const = 0;
  // Stable hash of the tokenizer's files; a prepared dataset records it.
  virtual uint64_t content_hash() const = 0;
};

// Refuses a model whose embedding has fewer rows (`model_vocab_size`) than the tokenizer has ids
// (vocab_size(): one past its largest id, added tokens included): such an id would index past
// the embedding in the middle of training. Throws dpo::Error naming both files and both sizes.
void CheckVocabularyFits(const Tokenizer& tokenizer, std::string_view tokenizer_name, int64_t model_vocab_size,
                         std::string_view model_name);

}  // namespace dpo
