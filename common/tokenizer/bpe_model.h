// tokenizer.json "model" of type BPE: a vocabulary, ranked merges, and HF's word encoding rules
// (ignore_merges, byte_fallback to <0xNN> tokens, unk_token with fuse_unk).
//
// Merging applies, repeatedly, the lowest-ranked merge among adjacent symbol pairs, leftmost
// first: exactly HF's priority-queue order. Short words use a linear scan over a symbol array,
// long ones (a SentencePiece span can be a whole document) a binary heap over a linked list, so
// a word of n symbols costs O(n log n). Encoded words are cached per thread and model.
// SentencePiece words are first cut where no merge can reach across (see split_at_marker_).
//
// Thread-safety: immutable after construction; Encode may run concurrently.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/tokenizer/string_table.h"

namespace dpo::tok {

using Id = int32_t;

class BpeModel {
 public:
  // Builds from the "model" node. byte_level: words arrive as raw bytes (see pre_tokenizer.h),
  // so vocabulary strings are mapped from GPT-2 characters back to bytes for lookup.
  BpeModel(const nlohmann::json& node, bool byte_level, const std::string& context);

  // Appends the ids of one pre-tokenized word (valid UTF-8 unless byte_level).
  void Encode(std::string_view word, std::vector<Id>* out) const;

  // Token string (as written in tokenizer.json) of a vocabulary id; empty view if none.
  std::string_view IdToToken(Id id) const {
    if (id < 0 || static_cast<size_t>(id) >= tokens_.size()) return {};
    return tokens_[id];
  }
  // Id of a token string as written in tokenizer.json.
  const Id* TokenToId(std::string_view token) const;
  // One past the largest vocabulary id.
  size_t size() const { return tokens_.size(); }
  // Number of vocabulary entries (HF's get_vocab_size; equals size() for a dense vocabulary).
  size_t entries() const { return json_vocab_.size(); }

 private:
  struct MergeValue {
    int32_t rank;
    Id merged;
  };
  // Open-addressing map (left id, right id) -> merge, for the inner loop.
  class MergeMap {
   public:
    void Reserve(size_t n);
    void Insert(Id a, Id b, MergeValue v);
    const MergeValue* Find(Id a, Id b) const;

   private:
    static uint64_t Key(Id a, Id b) { return (uint64_t{static_cast<uint32_t>(a)} << 32) | static_cast<uint32_t>(b); }
    std::vector<uint64_t> keys_;
    std::vector<MergeValue> values_;
    uint64_t mask_ = 0;
  };

  void EncodePiece(std::string_view word, std::vector<Id>* out) const;
  void InitialSymbols(std::string_view word, std::vector<Id>* ids) const;
  void MergeShort(std::vector<Id>* ids) const;
  void MergeLong(std::vector<Id>* ids) const;
  Id Lookup(std::string_view model_token) const;  // -1 when absent

  std::vector<std::string> tokens_;                      // id -> token as in tokenizer.json
  std::vector<std::string> model_tokens_;                // id -> token in model space (bytes if byte_level)
  StringTable vocab_;                                    // model space -> id
  std::unordered_map<std::string_view, Id> json_vocab_;  // tokenizer.json spelling
  MergeMap merges_;
  Id byte_ids_[256];           // byte_level: id of each single byte; -1 if absent
  Id byte_fallback_ids_[256];  // byte_fallback: id of "<0xNN>"; -1 if absent
  bool byte_level_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  // SentencePiece words (often a whole span: no pre-tokenizer) split before each U+2581 that
  // follows another character, when no token contains such a pair: no merge can cross those
  // boundaries, so the pieces encode independently (and are cached) with identical results.
  bool split_at_marker_ = false;
  Id unk_id_ = -1;
  uint64_t instance_;  // distinguishes models in the per-thread cache
};

}  // namespace dpo::tok
