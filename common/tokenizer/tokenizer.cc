// HfTokenizer: the tokenizer.json pipeline (added tokens -> normalizer -> pre-tokenizer -> BPE ->
// post-processor) behind dpo::Tokenizer.
#include "common/tokenizer/tokenizer.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/tokenizer/added_vocabulary.h"
#include "common/tokenizer/bpe_model.h"
#include "common/tokenizer/decoder.h"
#include "common/tokenizer/normalizer.h"
#include "common/tokenizer/pre_tokenizer.h"
#include "common/tokenizer/unicode_util.h"
#include "common/util/error.h"
#include "common/util/hash.h"
#include "common/util/mapped_file.h"

namespace dpo {

namespace {

using nlohmann::json;
using tok::Id;

// Reads a special-token entry of tokenizer_config.json: a string or {"content": ...}.
std::optional<std::string> ConfigToken(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(const json& tj, const json& config, const std::string& name, uint64_t hash)
      : normalizer_(tj.value("normalizer", json()), name + ": normalizer"),
        pre_tokenizer_(tj.value("pre_tokenizer", json()), name + ": pre_tokenizer"),
        model_(Required(tj, "model", name), pre_tokenizer_.byte_level(), name + ": model"),
        decoder_(tj.value("decoder", json()), name + ": decoder"),
        added_(ReadAddedTokens(tj, name)),
        hash_(hash) {
    vocab_size_ = model_.size();
    for (const auto& t : added_.tokens()) vocab_size_ = std::max(vocab_size_, static_cast<size_t>(t.id) + 1);
    ReadPostProcessor(tj.value("post_processor", json()), name + ": post_processor");
    ReadConfig(config, name);
  }

  std::vector<TokenId> Encode(std::string_view text, bool add_special_tokens) const override {
    std::string repaired;
    if (!tok::IsValidUtf8(text)) {
      repaired = tok::Utf8Lossy(text);
      text = repaired;
    }
    std::vector<TokenId> ids;
    if (add_special_tokens) ids = prefix_;
    std::vector<tok::Segment> raw;
    added_.Split(text, /*normalized_set=*/false, &raw);
    std::vector<std::string_view> words;
    tok::PieceArena arena;
    std::vector<tok::Segment> sub;
    for (const tok::Segment& seg : raw) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      std::string_view span = text.substr(seg.begin, seg.end - seg.begin);
      if (span.empty()) continue;  // HF drops empty splits before any normalizer or prefix
      std::string normalized;
      if (!normalizer_.empty()) {
        normalized = normalizer_.Apply(span);
        span = normalized;
      }
      sub.clear();
      if (added_.has_normalized())
        added_.Split(span, /*normalized_set=*/true, &sub);
      else
        sub.push_back({-1, 0, span.size()});
      for (const tok::Segment& part : sub) {
        if (part.id >= 0) {
          ids.push_back(part.id);
          continue;
        }
        if (part.end == part.begin) continue;
        words.clear();
        pre_tokenizer_.Apply(span.substr(part.begin, part.end - part.begin), seg.begin == 0 && part.begin == 0, &words,
                             &arena);
        for (std::string_view w : words) model_.Encode(w, &ids);
      }
    }
    if (add_special_tokens) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
    return ids;
  }

  std::string Decode(const std::vector<TokenId>& ids, bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (TokenId id : ids) {
      if (const tok::AddedToken* t = added_.ById(id)) {
        if (!(skip_special_tokens && t->special)) tokens.push_back(t->decoded);
        continue;
      }
      std::string_view t = model_.IdToToken(id);
      // Unknown ids are dropped, as HF's decode does.
      if (!t.empty()) tokens.emplace_back(t);
    }
    return decoder_.Decode(std::move(tokens));
  }

  std::optional<TokenId> bos_id() const override { return bos_; }
  std::optional<TokenId> eos_id() const override { return eos_; }
  std::optional<TokenId> pad_id() const override { return pad_; }
  std::optional<TokenId> TokenToId(std::string_view token) const override {
    if (const tok::AddedToken* t = added_.ByContent(token)) return t->id;
    if (const Id* id = model_.TokenToId(token)) return *id;
    return std::nullopt;
  }
  size_t vocab_size() const override { return vocab_size_; }
  const std::string& chat_template() const override { return chat_template_; }
  uint64_t content_hash() const override { return hash_; }

 private:
  static const json& Required(const json& tj, const char* key, const std::string& name) {
    auto it = tj.find(key);
    if (it == tj.end()) Fail(name + ": " + key, "missing");
    return *it;
  }

  tok::AddedVocabulary ReadAddedTokens(const json& tj, const std::string& name) {
    std::vector<tok::AddedToken> tokens;
    std::vector<std::string> normalized;
    auto list = tj.find("added_tokens");
    if (list != tj.end() && !list->is_null()) {
      if (!list->is_array()) Fail(name + ": added_tokens", "not an array");
      for (size_t i = 0; i < list->size(); ++i) {
        const json& e = (*list)[i];
        std::string ctx = name + ": added_tokens[" + std::to_string(i) + "]";
        if (!e.is_object() || !e.contains("content") || !e["content"].is_string() || !e.contains("id") ||
            !e["id"].is_number_integer() || e["id"].get<int64_t>() < 0 || e["id"].get<int64_t>() > INT32_MAX)
          Fail(ctx, "needs a string \"content\" and a non-negative integer \"id\"");
        tok::AddedToken t;
        t.content = e["content"].get<std::string>();
        t.single_word = e.value("single_word", false);
        t.lstrip = e.value("lstrip", false);
        t.rstrip = e.value("rstrip", false);
        t.special = e.value("special", false);
        t.normalized = e.value("normalized", !t.special);
        if (!tok::IsValidUtf8(t.content)) Fail(ctx + ".content", "not valid UTF-8");
        normalized.push_back(t.normalized && !normalizer_.empty() ? normalizer_.Apply(t.content) : t.content);
        t.decoded = normalized.back();
        t.id = AssignAddedId(t, normalized.back(), tokens);
        tokens.push_back(std::move(t));
      }
    }
    return tok::AddedVocabulary(std::move(tokens), normalized);
  }

  // HF re-derives added-token ids on load instead of trusting "id" (it only warns when they
  // differ; real files agree): the model's id of the content (or of its normalized form), the
  // id of an earlier token with that content, else the next id after the model vocabulary and
  // the added tokens so far.
  Id AssignAddedId(const tok::AddedToken& t, const std::string& normalized,
                   const std::vector<tok::AddedToken>& earlier) const {
    if (const Id* id = model_.TokenToId(t.content)) return *id;
    if (t.normalized)
      if (const Id* id = model_.TokenToId(normalized)) return *id;
    Id max_added = -1;
    for (const tok::AddedToken& e : earlier) {
      if (e.content == t.content) return e.id;
      max_added = std::max(max_added, e.id);
    }
    const Id model_size = static_cast<Id>(model_.entries());
    return max_added >= model_size ? max_added + 1 : model_size;
  }

  Id IdOf(const std::string& token, const std::string& ctx) const {
    auto id = TokenToId(token);
    if (!id) Fail(ctx, "token \"" + token + "\" is not in the vocabulary");
    return *id;
  }

  // Collects the ids the post-processor puts before and after a single sequence.
  void ReadPostProcessor(const json& node, const std::string& ctx) {
    if (node.is_null()) return;
    if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) Fail(ctx, "needs a string \"type\"");
    std::string type = node["type"].get<std::string>();
    if (type == "Sequence") {
      const json& list = node.value("processors", json());
      if (!list.is_array()) Fail(ctx + ".processors", "missing array");
      for (size_t i = 0; i < list.size(); ++i)
        ReadPostProcessor(list[i], ctx + ".processors[" + std::to_string(i) + "]");
    } else if (type == "TemplateProcessing") {
      const json& single = node.value("single", json());
      const json& specials = node.value("special_tokens", json::object());
      if (!single.is_array()) Fail(ctx + ".single", "missing array");
      bool seen_sequence = false;
      for (size_t i = 0; i < single.size(); ++i) {
        const json& piece = single[i];
        std::string pctx = ctx + ".single[" + std::to_string(i) + "]";
        if (piece.contains("Sequence")) {
          seen_sequence = true;
        } else if (piece.contains("SpecialToken") && piece["SpecialToken"].contains("id")) {
          std::string name = piece["SpecialToken"]["id"].get<std::string>();
          auto it = specials.find(name);
          if (it == specials.end() || !it->contains("ids") || !(*it)["ids"].is_array())
            Fail(pctx, "special token \"" + name + "\" has no ids in special_tokens");
          for (const json& id : (*it)["ids"]) (seen_sequence ? suffix_ : prefix_).push_back(id.get<Id>());
        } else {
          Fail(pctx, "expected Sequence or SpecialToken");
        }
      }
    } else if (type == "BertProcessing" || type == "RobertaProcessing") {
      for (const char* key : {"cls", "sep"}) {
        const json& pair = node.value(key, json());
        if (!pair.is_array() || pair.size() != 2 || !pair[1].is_number_integer())
          Fail(ctx + "." + key, "expected [token, id]");
        (std::string(key) == "cls" ? prefix_ : suffix_).push_back(pair[1].get<Id>());
      }
    } else if (type != "ByteLevel") {
      Fail(ctx + ".type", "unsupported post_processor \"" + type + "\"");
    }
  }

  void ReadConfig(const json& config, const std::string& name) {
    std::string ctx = name + " (tokenizer_config)";
    if (auto t = ConfigToken(config, "bos_token")) bos_ = IdOf(*t, ctx + ": bos_token");
    if (auto t = ConfigToken(config, "eos_token")) eos_ = IdOf(*t, ctx + ": eos_token");
    if (auto t = ConfigToken(config, "pad_token")) pad_ = IdOf(*t, ctx + ": pad_token");
    // Explicit add_bos_token / add_eos_token win over the post-processor, as transformers'
    // Llama-family tokenizers rebuild their template from them.
    bool has_bos_flag = config.contains("add_bos_token") && config["add_bos_token"].is_boolean();
    bool has_eos_flag = config.contains("add_eos_token") && config["add_eos_token"].is_boolean();
    if (has_bos_flag || has_eos_flag) {
      prefix_.clear();
      suffix_.clear();
      if (has_bos_flag && config["add_bos_token"].get<bool>()) {
        if (!bos_) Fail(ctx + ": add_bos_token", "true but there is no bos_token");
        prefix_.push_back(*bos_);
      }
      if (has_eos_flag && config["add_eos_token"].get<bool>()) {
        if (!eos_) Fail(ctx + ": add_eos_token", "true but there is no eos_token");
        suffix_.push_back(*eos_);
      }
    }
    auto tmpl = config.find("chat_template");
    if (tmpl != config.end()) {
      if (tmpl->is_string()) {
        chat_template_ = tmpl->get<std::string>();
      } else if (tmpl->is_array()) {
        for (const json& e : *tmpl)
          if (e.value("name", std::string()) == "default") chat_template_ = e.value("template", std::string());
      }
    }
  }

  tok::Normalizer normalizer_;
  tok::PreTokenizer pre_tokenizer_;
  tok::BpeModel model_;
  tok::Decoder decoder_;
  tok::AddedVocabulary added_;
  std::vector<TokenId> prefix_, suffix_;
  std::optional<TokenId> bos_, eos_, pad_;
  size_t vocab_size_ = 0;
  std::string chat_template_;
  uint64_t hash_;
};

json ParseJson(std::string_view text, const std::string& name) {
  try {
    json j = json::parse(text.begin(), text.end());
    if (!j.is_object()) Fail(name, "top level is not a JSON object");
    return j;
  } catch (const json::exception& e) {
    Fail(name, std::string("invalid JSON: ") + e.what());
  }
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::FromJson(std::string_view tokenizer_json, std::string_view config_json,
                                               const std::string& name) {
  json tj = ParseJson(tokenizer_json, name);
  json config = config_json.empty() ? json::object() : ParseJson(config_json, name + " (tokenizer_config)");
  uint64_t hash = Hasher().Update(tokenizer_json).Update(config_json).Digest();
  try {
    return std::make_unique<HfTokenizer>(tj, config, name, hash);
  } catch (const json::exception& e) {
    // A field of the wrong JSON type deep inside a section.
    Fail(name, std::string("unexpected JSON type: ") + e.what());
  }
}

void CheckVocabularyFits(const Tokenizer& tokenizer, std::string_view tokenizer_name, int64_t model_vocab_size,
                         std::string_view model_name) {
  const size_t needed = tokenizer.vocab_size();
  if (model_vocab_size >= 0 && static_cast<uint64_t>(model_vocab_size) >= needed) return;
  Fail(model_name,
       "vocab_size " + std::to_string(model_vocab_size) + " is smaller than the tokenizer's " +
           std::string(tokenizer_name) + ", whose largest token id is " + std::to_string(needed - 1) +
           " (the model needs vocab_size >= " + std::to_string(needed) + ")",
       ErrorCode::kInvalidSpec);
}

std::unique_ptr<Tokenizer> Tokenizer::Load(const std::string& path) {
  namespace fs = std::filesystem;
  std::string file = path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) file = (fs::path(path) / "tokenizer.json").string();
  fs::path config_path = fs::path(file).parent_path() / "tokenizer_config.json";
  MappedFile tokenizer_file(file);
  std::optional<MappedFile> config_file;
  if (fs::exists(config_path, ec)) config_file.emplace(config_path.string());
  return FromJson(tokenizer_file.view(), config_file ? config_file->view() : std::string_view(), file);
}

}  // namespace dpo
