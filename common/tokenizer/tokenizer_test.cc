// Unit tests on tiny in-test tokenizer.json files: BPE merge order, added tokens, byte fallback,
// decoders, BOS/EOS, and errors for malformed files. Exactness against HF on the real
// tokenizers is tests/oracle/test_tokenizer.py.
#include "common/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/tokenizer/unicode_util.h"
#include "common/util/error.h"
#include "common/util/path_util.h"

namespace dpo {
namespace {

using nlohmann::json;

// Byte-level BPE in the GPT-2 / Llama-3 style over a handful of tokens.
json ByteLevelJson() {
  json vocab = json::object();
  int id = 0;
  // All 256 byte characters first, as real byte-level vocabularies have them.
  for (int b = 0; b < 256; ++b) {
    std::string s;
    tok::AppendUtf8(tok::ByteToChar(static_cast<uint8_t>(b)), &s);
    vocab[s] = id++;
  }
  for (const char* t : {"ll", "he", "hell", "hello", "\xC4\xA0w", "\xC4\xA0wor", "or", "ld", "\xC4\xA0world"})
    vocab[t] = id++;
  json merges =
      json::array({"l l", "h e", "he ll", "hell o", "o r", "\xC4\xA0 w", "\xC4\xA0w or", "l d", "\xC4\xA0wor ld"});
  return {{"added_tokens", json::array({{{"id", 265},
                                         {"content", "<|end|>"},
                                         {"single_word", false},
                                         {"lstrip", false},
                                         {"rstrip", false},
                                         {"normalized", false},
                                         {"special", true}},
                                        {{"id", 266},
                                         {"content", "<|end|>x"},
                                         {"single_word", false},
                                         {"lstrip", false},
                                         {"rstrip", false},
                                         {"normalized", false},
                                         {"special", false}}})},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             json::array({{{"type", "Split"},
                           {"pattern", {{"Regex", R"( ?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"}}},
                           {"behavior", "Isolated"},
                           {"invert", false}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
          {"post_processor", {{"type", "ByteLevel"}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

// SentencePiece-style BPE (Llama-2 / Mistral): Prepend + Replace normalizer, byte fallback.
json SentencePieceJson() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
    vocab[hex] = 3 + b;
  }
  int id = 259;
  for (const char* t : {"\xE2\x96\x81", "h", "i", "\xE2\x96\x81h", "\xE2\x96\x81hi"}) vocab[t] = id++;
  return {
      {"added_tokens", json::array({{{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
                                    {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}})},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         json::array({{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
                      {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}})}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
                                  {{"type", "ByteFallback"}},
                                  {{"type", "Fuse"}},
                                  {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model",
       {{"type", "BPE"},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", json::array({"\xE2\x96\x81 h", "\xE2\x96\x81h i"})}}}};
}

std::vector<TokenId> Ids(std::initializer_list<TokenId> ids) { return ids; }

TEST(TokenizerTest, ByteLevelMergesFollowRankOrder) {
  auto tok = Tokenizer::FromJson(ByteLevelJson().dump(), "", "tiny.json");
  // "hello" -> h e l l o -> (l l) -> (h e) -> (he ll) -> (hell o) = "hello" (260 + ...).
  EXPECT_EQ(tok->Encode("hello", false), Ids({259}));
  // " world": Ġ w -> Ġw; o r -> or; Ġw or -> Ġwor; l d -> ld; Ġwor ld -> Ġworld.
  EXPECT_EQ(tok->Encode("hello world", false), Ids({259, 264}));
  // Unmerged bytes stay single-byte tokens: 'x' is byte 0x78.
  EXPECT_EQ(tok->Encode("helx", false), Ids({257, 'l', 'x'}));
  EXPECT_EQ(tok->Decode(tok->Encode("hello world \xC3\xA9!", false), false), "hello world \xC3\xA9!");
  EXPECT_EQ(tok->vocab_size(), 267u);
}

TEST(TokenizerTest, AddedTokensMatchLongestFirst) {
  auto tok = Tokenizer::FromJson(ByteLevelJson().dump(), "", "tiny.json");
  EXPECT_EQ(tok->Encode("hello<|end|>", false), Ids({259, 265}));
  EXPECT_EQ(tok->Encode("<|end|>xhello", false), Ids({266, 259}));  // longest match wins
  EXPECT_EQ(tok->Decode({259, 265}, false), "hello<|end|>");
  EXPECT_EQ(tok->Decode({259, 265}, true), "hello");          // special dropped
  EXPECT_EQ(tok->Decode({259, 266}, true), "hello<|end|>x");  // not special: kept
  EXPECT_EQ(tok->TokenToId("<|end|>"), 265);
  EXPECT_EQ(tok->TokenToId("hello"), 259);
  EXPECT_FALSE(tok->TokenToId("nope").has_value());
}

TEST(TokenizerTest, AddedTokenIdsAreDerivedAsHfDoes) {
  // HF ignores a disagreeing "id": a token in the model vocabulary keeps the model's id, a new
  // one takes the next id after the vocabulary and the added tokens before it.
  json j = ByteLevelJson();
  j["added_tokens"].push_back({{"id", 999}, {"content", "hello"}, {"special", false}});
  j["added_tokens"].push_back({{"id", 5}, {"content", "<|new|>"}, {"special", true}});
  auto tok = Tokenizer::FromJson(j.dump(), "", "tiny.json");
  EXPECT_EQ(tok->TokenToId("hello"), 259);
  EXPECT_EQ(tok->TokenToId("<|new|>"), 267);
  EXPECT_EQ(tok->Encode("hello<|new|>", false), Ids({259, 267}));
  EXPECT_EQ(tok->Decode({267}, false), "<|new|>");
}

TEST(TokenizerTest, ConcurrentEncodeMatchesSequential) {
  // Each thread has its own word cache and regex scratch; results must not depend on them.
  auto tok = Tokenizer::FromJson(ByteLevelJson().dump(), "", "tiny.json");
  std::vector<std::string> texts;
  texts.reserve(200);
  for (int i = 0; i < 200; ++i)
    texts.push_back("hello world " + std::to_string(i) + std::string(i % 7, ' ') + "<|end|>x");
  std::vector<std::vector<TokenId>> want;
  want.reserve(texts.size());
  for (const auto& t : texts) want.push_back(tok->Encode(t, true));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (size_t k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 20; ++rep)
        for (size_t i = 0; i < texts.size(); ++i)
          mismatches[k] += tok->Encode(texts[(i + k * 37) % texts.size()], true) != want[(i + k * 37) % texts.size()];
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(TokenizerTest, InvalidUtf8IsReplaced) {
  auto tok = Tokenizer::FromJson(ByteLevelJson().dump(), "", "tiny.json");
  EXPECT_EQ(tok->Encode("he\xFFll", false), tok->Encode("he\xEF\xBF\xBDll", false));
  EXPECT_EQ(tok::Utf8Lossy("a\xE2\x82z"), "a\xEF\xBF\xBDz");  // one subpart -> one U+FFFD
}

TEST(TokenizerTest, SentencePieceByteFallbackAndBos) {
  auto tok = Tokenizer::FromJson(SentencePieceJson().dump(), R"({"bos_token": "<s>"})", "sp.json");
  // "hi é" -> "▁hi▁é": ▁hi, ▁, then é (not in vocab) as bytes C3 A9.
  EXPECT_EQ(tok->Encode("hi \xC3\xA9", false), Ids({263, 259, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(tok->Encode("hi", true), Ids({1, 263}));  // template adds <s>
  EXPECT_EQ(tok->Encode("<s>hi", false), Ids({1, 263}));
  EXPECT_EQ(tok->Decode({1, 263, 259, 3 + 0xC3, 3 + 0xA9}, true), "hi \xC3\xA9");
  // A lone continuation byte does not form UTF-8: one U+FFFD per byte.
  EXPECT_EQ(tok->Decode({263, 3 + 0xA9}, true), "hi\xEF\xBF\xBD");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_FALSE(tok->eos_id().has_value());
}

TEST(TokenizerTest, ConfigFlagsOverrideTemplate) {
  auto tok = Tokenizer::FromJson(
      SentencePieceJson().dump(),
      R"({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": false, "add_eos_token": true})", "sp.json");
  EXPECT_EQ(tok->Encode("hi", true), Ids({263, 2}));
  EXPECT_EQ(tok->Encode("hi", false), Ids({263}));
}

TEST(TokenizerTest, LoadsFromDirectory) {
  auto dir = std::filesystem::temp_directory_path() / ("dpo_tok_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << SentencePieceJson().dump();
  std::ofstream(dir / "tokenizer_config.json") << R"({"bos_token": "<s>", "chat_template": "T"})";
  auto tok = Tokenizer::Load(dir.string());
  EXPECT_EQ(tok->Encode("hi", true), Ids({1, 263}));
  EXPECT_EQ(tok->chat_template(), "T");
  RemoveTree(dir.string());
}

void ExpectError(const json& j, const std::string& needle) {
  try {
    Tokenizer::FromJson(j.dump(), "", "bad/tokenizer.json");
    FAIL() << "no error; wanted " << needle;
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("bad/tokenizer.json"), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  }
}

TEST(TokenizerTest, MalformedFilesNameFileAndField) {
  json j = ByteLevelJson();
  j["model"].erase("vocab");
  ExpectError(j, "model.vocab");
  j = ByteLevelJson();
  j["model"]["merges"].push_back("zz qq");
  ExpectError(j, "model.merges[9]");
  j = ByteLevelJson();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  ExpectError(j, "pre_tokenizer.pretokenizers[0].pattern");
  j = ByteLevelJson();
  j["added_tokens"][0].erase("id");
  ExpectError(j, "added_tokens[0]");
  j = ByteLevelJson();
  j["model"]["vocab"]["ll"] = "x";
  ExpectError(j, "model.vocab[\"ll\"]");
  j = ByteLevelJson();
  j["model"]["vocab"]["zz"] = 1000000000;  // would need a billion-entry table
  ExpectError(j, "model.vocab");
  EXPECT_THROW(Tokenizer::FromJson("{not json", "", "bad/tokenizer.json"), Error);
  EXPECT_THROW(Tokenizer::Load("/nonexistent/tokenizer.json"), Error);
}

TEST(TokenizerTest, RegexMatchLimitNamesFileAndField) {
  // Nested quantifiers backtrack exponentially on a's not followed by b: PCRE2 gives up at its
  // match limit, and the error says which tokenizer file and regex (the data layer adds the line).
  json j = ByteLevelJson();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(a+)+b";
  auto tokenizer = Tokenizer::FromJson(j.dump(), "", "dir/tokenizer.json");
  try {
    tokenizer->Encode(std::string(40, 'a') + "!b", false);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("dir/tokenizer.json: pre_tokenizer.pretokenizers[0].pattern: regex match failed: ", 0), 0u)
        << what;
    EXPECT_NE(what.find("limit"), std::string::npos) << what;
  }
}

TEST(TokenizerTest, VocabularyCheckNamesBothFilesAndSizes) {
  auto tokenizer = Tokenizer::FromJson(ByteLevelJson().dump(), "", "tok.json");
  ASSERT_EQ(tokenizer->vocab_size(), 267u);  // largest id 266, an added token
  CheckVocabularyFits(*tokenizer, "tok.json", 267, "model/config.json");
  try {
    CheckVocabularyFits(*tokenizer, "tok.json", 266, "model/config.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "model/config.json: vocab_size 266 is smaller than the tokenizer's tok.json, whose "
              "largest token id is 266 (the model needs vocab_size >= 267)");
  }
}

}  // namespace
}  // namespace dpo
