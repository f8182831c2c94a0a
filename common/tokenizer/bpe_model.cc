#include "common/tokenizer/bpe_model.h"

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>
#include <queue>

#include "common/tokenizer/unicode_util.h"
#include "common/util/error.h"

namespace dpo::tok {

namespace {

// Words longer than this (bytes) are neither cached nor merged by linear scan.
constexpr size_t kShortWord = 64;
constexpr size_t kMaxCacheEntries = 1 << 18;
constexpr std::string_view kMarker = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// True when `token` holds U+2581 right after a different character.
bool MarkerAfterOther(std::string_view token) {
  for (size_t pos = token.find(kMarker, 1); pos != std::string_view::npos; pos = token.find(kMarker, pos + 1)) {
    if (pos < kMarker.size() || token.substr(pos - kMarker.size(), kMarker.size()) != kMarker) return true;
  }
  return false;
}

std::atomic<uint64_t> next_instance{1};

// word -> its ids, as (offset into ids) << 16 | count; words are at most kShortWord bytes so
// count fits 16 bits.
struct WordCache {
  uint64_t instance = 0;
  StringTable words;
  std::vector<Id> ids;
  void Clear() {
    words.Clear();
    ids.clear();
  }
};

// One cache per thread, for the model used last on that thread (the usual case is one model).
WordCache& ThreadCache(uint64_t instance) {
  thread_local WordCache cache;
  if (cache.instance != instance) {
    cache.Clear();
    cache.instance = instance;
  }
  return cache;
}

std::string ToModelSpace(const std::string& token, bool byte_level, bool* ok) {
  *ok = true;
  if (!byte_level) return token;
  std::string bytes;
  bytes.reserve(token.size());
  for (size_t i = 0; i < token.size();) {
    int b = CharToByte(NextCodePoint(token, &i));
    if (b < 0) {
      *ok = false;
      return token;
    }
    bytes.push_back(static_cast<char>(b));
  }
  return bytes;
}

}  // namespace

void BpeModel::MergeMap::Reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  keys_.assign(cap, ~uint64_t{0});
  values_.assign(cap, MergeValue{0, 0});
  mask_ = cap - 1;
}

void BpeModel::MergeMap::Insert(Id a, Id b, MergeValue v) {
  uint64_t key = Key(a, b);
  for (uint64_t i = (key * 0x9E3779B97F4A7C15ULL) >> 20 & mask_;; i = (i + 1) & mask_) {
    if (keys_[i] == ~uint64_t{0}) {
      keys_[i] = key;
      values_[i] = v;
      return;
    }
    if (keys_[i] == key) {  // a repeated merge: the later one wins, as in HF's HashMap collect
      values_[i] = v;
      return;
    }
  }
}

const BpeModel::MergeValue* BpeModel::MergeMap::Find(Id a, Id b) const {
  uint64_t key = Key(a, b);
  for (uint64_t i = (key * 0x9E3779B97F4A7C15ULL) >> 20 & mask_;; i = (i + 1) & mask_) {
    if (keys_[i] == key) return &values_[i];
    if (keys_[i] == ~uint64_t{0}) return nullptr;
  }
}

BpeModel::BpeModel(const nlohmann::json& node, bool byte_level, const std::string& context)
    : byte_level_(byte_level), instance_(next_instance++) {
  if (!node.is_object()) Fail(context, "not an object");
  if (node.value("type", std::string("BPE")) != "BPE")
    Fail(context + ".type", "unsupported model \"" + node.value("type", std::string()) + "\" (only BPE)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = node.find(key);
    if (it != node.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
      Fail(context + "." + key, "unsupported (only null or empty)");
  }
  auto dropout = node.find("dropout");
  if (dropout != node.end() && !dropout->is_null() && dropout->get<double>() != 0.0)
    Fail(context + ".dropout", "unsupported (dropout is for training)");
  auto vocab = node.find("vocab");
  if (vocab == node.end() || !vocab->is_object()) Fail(context + ".vocab", "missing object");

  Id max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > INT32_MAX)
      Fail(context + ".vocab[\"" + it.key() + "\"]", "id is not a non-negative integer");
    max_id = std::max(max_id, it.value().get<Id>());
  }
  // Ids index dense arrays; real vocabularies are dense, and a stray huge id must not make us
  // allocate gigabytes.
  if (static_cast<size_t>(max_id) >= vocab->size() + 65536)
    Fail(context + ".vocab",
         "ids are sparse (largest " + std::to_string(max_id) + " for " + std::to_string(vocab->size()) + " entries)");
  tokens_.resize(max_id + 1);
  model_tokens_.resize(max_id + 1);
  std::vector<bool> mapped(max_id + 1, false);
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    Id id = it.value().get<Id>();
    tokens_[id] = it.key();
    bool ok;
    model_tokens_[id] = ToModelSpace(it.key(), byte_level, &ok);
    mapped[id] = ok;
  }
  json_vocab_.reserve(tokens_.size());
  for (Id id = 0; id <= max_id; ++id) {
    // A byte-level token outside GPT-2's character set can never be produced by merges.
    if (mapped[id]) vocab_.Insert(model_tokens_[id], static_cast<uint64_t>(id));
    json_vocab_.emplace(tokens_[id], id);
  }

  for (int b = 0; b < 256; ++b) {
    char s = static_cast<char>(b);
    byte_ids_[b] = Lookup(std::string_view(&s, 1));
    char hex[8];
    snprintf(hex, sizeof(hex), "<0x%02X>", b);
    auto it = json_vocab_.find(hex);
    byte_fallback_ids_[b] = it == json_vocab_.end() ? -1 : it->second;
  }
  byte_fallback_ = node.value("byte_fallback", false);
  fuse_unk_ = node.value("fuse_unk", false);
  ignore_merges_ = node.value("ignore_merges", false);
  auto unk = node.find("unk_token");
  if (unk != node.end() && !unk->is_null()) {
    auto it = json_vocab_.find(unk->get<std::string>());
    if (it == json_vocab_.end()) Fail(context + ".unk_token", "not in the vocabulary");
    unk_id_ = it->second;
  }

  if (!byte_level_ && Lookup(kMarker) >= 0) {
    split_at_marker_ = true;
    for (const std::string& t : model_tokens_)
      if (MarkerAfterOther(t)) split_at_marker_ = false;
  }

  auto merges = node.find("merges");
  if (merges == node.end() || !merges->is_array()) Fail(context + ".merges", "missing array");
  merges_.Reserve(merges->size());
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const auto& m = (*merges)[rank];
    std::string a, b;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        Fail(context + ".merges[" + std::to_string(rank) + "]", "expected \"a b\", got \"" + s + "\"");
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      Fail(context + ".merges[" + std::to_string(rank) + "]", "expected \"a b\" or [a, b]");
    }
    auto ia = json_vocab_.find(a), ib = json_vocab_.find(b), im = json_vocab_.find(a + b);
    if (ia == json_vocab_.end() || ib == json_vocab_.end() || im == json_vocab_.end())
      Fail(context + ".merges[" + std::to_string(rank) + "]",
           "token of merge \"" + a + " " + b + "\" not in the vocabulary");
    merges_.Insert(ia->second, ib->second, {static_cast<int32_t>(rank), im->second});
  }
}

Id BpeModel::Lookup(std::string_view model_token) const {
  const uint64_t* id = vocab_.Find(model_token);
  return id == nullptr ? -1 : static_cast<Id>(*id);
}

const Id* BpeModel::TokenToId(std::string_view token) const {
  auto it = json_vocab_.find(token);
  return it == json_vocab_.end() ? nullptr : &it->second;
}

void BpeModel::InitialSymbols(std::string_view word, std::vector<Id>* ids) const {
  // Mirrors HF's BPE::merge_word: a pending unk is flushed before the next known symbol.
  Id unk = -1;
  auto flush_unk = [&] {
    if (unk >= 0) {
      ids->push_back(unk);
      unk = -1;
    }
  };
  for (size_t i = 0; i < word.size();) {
    size_t n = byte_level_ ? 1 : std::min(Utf8Length(static_cast<unsigned char>(word[i])), word.size() - i);
    std::string_view sym = word.substr(i, n);
    i += n;
    Id id = n == 1 && byte_level_ ? byte_ids_[static_cast<unsigned char>(sym[0])] : Lookup(sym);
    if (id >= 0) {
      flush_unk();
      ids->push_back(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : sym) all = all && byte_fallback_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        for (char c : sym) {
          ids->push_back(byte_fallback_ids_[static_cast<unsigned char>(c)]);
        }
        continue;
      }
    }
    if (unk_id_ >= 0) {
      // fuse_unk: a run of unknown symbols becomes one unk.
      if (unk < 0 || !fuse_unk_) {
        flush_unk();
        unk = unk_id_;
      }
    }
  }
  flush_unk();
}

void BpeModel::MergeShort(std::vector<Id>* ids) const {
  std::vector<Id>& s = *ids;
  while (s.size() > 1) {
    int32_t best_rank = INT32_MAX;
    size_t best = 0;
    Id merged = -1;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const MergeValue* m = merges_.Find(s[i], s[i + 1]);
      if (m != nullptr && m->rank < best_rank) {
        best_rank = m->rank;
        best = i;
        merged = m->merged;
      }
    }
    if (merged < 0) break;
    s[best] = merged;
    s.erase(s.begin() + best + 1);
  }
}

void BpeModel::MergeLong(std::vector<Id>* ids) const {
  std::vector<Id>& sym = *ids;
  const int n = static_cast<int>(sym.size());
  std::vector<int> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int pos;
    Id merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto consider = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    if (const MergeValue* m = merges_.Find(sym[left], sym[next[left]])) heap.push({m->rank, left, m->merged});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    Candidate top = heap.top();
    heap.pop();
    int right = next[top.pos];
    if (!alive[top.pos] || right < 0) continue;
    // Stale entry: one side has merged since it was pushed.
    const MergeValue* m = merges_.Find(sym[top.pos], sym[right]);
    if (m == nullptr || m->merged != top.merged || m->rank != top.rank) continue;
    sym[top.pos] = top.merged;
    alive[right] = false;
    next[top.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = top.pos;
    consider(prev[top.pos]);
    consider(top.pos);
  }
  std::vector<Id> out;
  out.reserve(n);
  for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push_back(sym[i]);
  sym = std::move(out);
}

void BpeModel::Encode(std::string_view word, std::vector<Id>* out) const {
  if (!split_at_marker_ || word.size() <= kShortWord) {
    EncodePiece(word, out);
    return;
  }
  size_t begin = 0;
  for (size_t pos = word.find(kMarker, 1); pos != std::string_view::npos; pos = word.find(kMarker, pos + 1)) {
    if (pos >= kMarker.size() && word.substr(pos - kMarker.size(), kMarker.size()) == kMarker)
      continue;  // inside a run of markers
    EncodePiece(word.substr(begin, pos - begin), out);
    begin = pos;
  }
  EncodePiece(word.substr(begin), out);
}

void BpeModel::EncodePiece(std::string_view word, std::vector<Id>* out) const {
  if (word.empty()) return;
  const bool cacheable = word.size() <= kShortWord;
  WordCache* cache = nullptr;
  if (cacheable) {
    cache = &ThreadCache(instance_);
    if (const uint64_t* hit = cache->words.Find(word)) {
      const Id* ids = cache->ids.data() + (*hit >> 16);
      out->insert(out->end(), ids, ids + (*hit & 0xFFFF));
      return;
    }
  }
  size_t first = out->size();
  Id whole = ignore_merges_ ? Lookup(word) : -1;
  if (whole >= 0) {
    out->push_back(whole);
  } else {
    thread_local std::vector<Id> ids;
    ids.clear();
    InitialSymbols(word, &ids);
    if (ids.size() <= kShortWord)
      MergeShort(&ids);
    else
      MergeLong(&ids);
    out->insert(out->end(), ids.begin(), ids.end());
  }
  if (cacheable) {
    if (cache->words.size() >= kMaxCacheEntries) cache->Clear();
    cache->words.Insert(word, (static_cast<uint64_t>(cache->ids.size()) << 16) | (out->size() - first));
    cache->ids.insert(cache->ids.end(), out->begin() + first, out->end());
  }
}

}  // namespace dpo::tok
