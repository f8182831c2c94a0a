// tokenizer.json "added_tokens": tokens matched verbatim in the input before the model runs.
// Matching follows HF's AddedVocabulary: leftmost-longest over all tokens; tokens with
// normalized=false are matched in the raw text, those with normalized=true in each normalized
// remaining span (against their own normalized content); then single_word, lstrip and rstrip
// adjust or veto each match.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dpo::tok {

using Id = int32_t;

struct AddedToken {
  std::string content;
  Id id = -1;
  bool single_word = false;  // match only between non-word characters
  bool lstrip = false;       // the match swallows whitespace on its left
  bool rstrip = false;       // ... and on its right
  bool normalized = false;   // matched in normalized text
  bool special = false;      // dropped by Decode(skip_special_tokens)
  // What Decode emits: the content, normalized when `normalized` (as HF stores it).
  std::string decoded;
};

// A span [begin, end) of the text: an added token (id >= 0) or text for the model (id == -1).
struct Segment {
  Id id;
  size_t begin, end;
};

class AddedVocabulary {
 public:
  // `normalized_contents[i]` is tokens[i].content after the tokenizer's normalizer (used for
  // tokens with normalized=true).
  AddedVocabulary(std::vector<AddedToken> tokens, const std::vector<std::string>& normalized_contents);

  // Splits `text` by the tokens of one set (normalized=false: the raw set; true: the normalized
  // set), appending segments that cover `text` in order. Empty text gives one empty text segment.
  void Split(std::string_view text, bool normalized_set, std::vector<Segment>* out) const;
  bool has_normalized() const { return tries_[1].has_tokens; }

  const AddedToken* ById(Id id) const;
  const AddedToken* ByContent(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> children;  // sorted by byte
    int token = -1;                                       // index into tokens_
  };
  struct Trie {
    std::vector<Node> nodes{1};
    int root_next[256];   // the root's children, for the per-byte scan
    int first_bytes = 0;  // number of distinct first bytes; 1 lets the scan use memchr
    bool has_tokens = false;
  };
  void Insert(Trie* trie, std::string_view key, int token);
  // Longest token of `trie` starting at text[pos], its index and *end; -1 if none.
  int LongestAt(const Trie& trie, std::string_view text, size_t pos, size_t* end) const;

  std::vector<AddedToken> tokens_;
  Trie tries_[2];
  std::unordered_map<Id, size_t> by_id_;
  std::unordered_map<std::string, size_t> by_content_;
};

}  // namespace dpo::tok
