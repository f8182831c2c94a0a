#include "common/tokenizer/added_vocabulary.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstring>

#include "common/tokenizer/unicode_util.h"

namespace dpo::tok {

namespace {

// Unicode \w as HF checks it (regex_syntax::is_word_character): Alphabetic, marks, decimal
// digits, connector punctuation, Join_Control. Alphabetic = letters, Nl, and Other_Alphabetic,
// which outside the marks is the circled / squared Latin letters.
bool IsWordChar(char32_t c) {
  if (c == 0x200C || c == 0x200D) return true;
  if ((c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
      (c >= 0x1F170 && c <= 0x1F189))
    return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC: return true;
    default: return false;
  }
}

char32_t LastChar(std::string_view s) {
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return NextCodePoint(s, &start);
}

}  // namespace

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens, const std::vector<std::string>& normalized_contents)
    : tokens_(std::move(tokens)) {
  for (Trie& t : tries_) std::fill(std::begin(t.root_next), std::end(t.root_next), -1);
  for (size_t i = 0; i < tokens_.size(); ++i) {
    by_id_[tokens_[i].id] = i;
    by_content_.emplace(tokens_[i].content, i);
    if (tokens_[i].content.empty()) continue;
    if (tokens_[i].normalized)
      Insert(&tries_[1], normalized_contents[i], static_cast<int>(i));
    else
      Insert(&tries_[0], tokens_[i].content, static_cast<int>(i));
  }
}

void AddedVocabulary::Insert(Trie* trie, std::string_view key, int token) {
  if (key.empty()) return;
  int node = 0;
  for (unsigned char c : key) {
    auto& ch = trie->nodes[node].children;
    auto it = std::lower_bound(ch.begin(), ch.end(), std::make_pair(c, 0),
                               [](const auto& a, const auto& b) { return a.first < b.first; });
    if (it != ch.end() && it->first == c) {
      node = it->second;
    } else {
      int child = static_cast<int>(trie->nodes.size());
      ch.insert(it, {c, child});
      if (node == 0) {
        trie->root_next[c] = child;
        ++trie->first_bytes;
      }
      trie->nodes.emplace_back();
      node = child;
    }
  }
  // Two tokens with one content: the first keeps it (HF maps content -> first id).
  if (trie->nodes[node].token < 0) trie->nodes[node].token = token;
  trie->has_tokens = true;
}

int AddedVocabulary::LongestAt(const Trie& trie, std::string_view text, size_t pos, size_t* end) const {
  int node = trie.root_next[static_cast<unsigned char>(text[pos])];
  int best = -1;
  for (size_t i = pos + 1; node >= 0; ++i) {
    if (trie.nodes[node].token >= 0) {
      best = trie.nodes[node].token;
      *end = i;
    }
    if (i >= text.size()) break;
    const auto& ch = trie.nodes[node].children;
    unsigned char c = static_cast<unsigned char>(text[i]);
    auto it = std::lower_bound(ch.begin(), ch.end(), std::make_pair(c, 0),
                               [](const auto& a, const auto& b) { return a.first < b.first; });
    node = it != ch.end() && it->first == c ? it->second : -1;
  }
  return best;
}

void AddedVocabulary::Split(std::string_view text, bool normalized_set, std::vector<Segment>* out) const {
  const Trie& trie = tries_[normalized_set ? 1 : 0];
  if (text.empty() || !trie.has_tokens) {
    out->push_back({-1, 0, text.size()});
    return;
  }
  size_t start_offset = 0;
  size_t pos = 0;
  const unsigned char only_first = trie.nodes[0].children.empty() ? 0 : trie.nodes[0].children[0].first;
  while (pos < text.size()) {
    // Skip to the next byte that can start a token.
    if (trie.first_bytes == 1) {
      const void* hit = std::memchr(text.data() + pos, only_first, text.size() - pos);
      if (hit == nullptr) break;
      pos = static_cast<const char*>(hit) - text.data();
    } else {
      while (pos < text.size() && trie.root_next[static_cast<unsigned char>(text[pos])] < 0) ++pos;
      if (pos == text.size()) break;
    }
    size_t stop = 0;
    int index = LongestAt(trie, text, pos, &stop);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[index];
    size_t start = pos;
    // HF scans all leftmost-longest matches first: a vetoed match still consumes its bytes, and
    // the scan resumes at the match's end even when rstrip extends the token past it.
    pos = stop;
    if (tok.single_word) {
      bool start_ok = start == 0 || !IsWordChar(LastChar(text.substr(0, start)));
      size_t after = stop;
      bool stop_ok = stop == text.size() || !IsWordChar(NextCodePoint(text, &after));
      if (!start_ok || !stop_ok) continue;
    }
    if (tok.lstrip) {
      size_t s = start;
      while (s > 0) {
        size_t prev = s - 1;
        while (prev > 0 && (static_cast<unsigned char>(text[prev]) & 0xC0) == 0x80) --prev;
        size_t tmp = prev;
        if (!IsWhiteSpace(NextCodePoint(text, &tmp))) break;
        s = prev;
      }
      start = std::max(s, start_offset);
    }
    if (tok.rstrip) {
      while (stop < text.size()) {
        size_t next = stop;
        if (!IsWhiteSpace(NextCodePoint(text, &next))) break;
        stop = next;
      }
    }
    if (start_offset < start) out->push_back({-1, start_offset, start});
    out->push_back({tok.id, start, stop});
    start_offset = stop;
  }
  if (start_offset != text.size()) out->push_back({-1, start_offset, text.size()});
}

const AddedToken* AddedVocabulary::ById(Id id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::ByContent(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

}  // namespace dpo::tok
