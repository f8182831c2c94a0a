#include "common/model/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>
#include <string_view>

#include "common/util/error.h"
#include "common/util/path_util.h"

namespace dpo {
namespace {

std::string WithHeader(const std::string& header_json, const std::string& data) {
  uint64_t len = header_json.size();
  std::string out(reinterpret_cast<const char*>(&len), 8);
  return out + header_json + data;
}

// Expects ParseSafetensorsHeader to throw a dpo::Error whose message contains every `parts`.
void ExpectError(const std::string& bytes, std::initializer_list<std::string> parts) {
  try {
    ParseSafetensorsHeader(bytes, "f.safetensors");
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("f.safetensors"), std::string::npos) << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
  }
}

TEST(SafetensorsTest, ParsesValidHeader) {
  std::string data(8 + 4, '\0');
  auto h = ParseSafetensorsHeader(
      WithHeader(R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2],)"
                 R"("data_offsets":[8,12]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                 data),
      "f");
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "a");
  EXPECT_EQ(h.tensors[1].dtype, "BF16");
  EXPECT_EQ(h.tensors[1].begin, 8u);
  EXPECT_EQ(h.metadata.at("format"), "pt");
  EXPECT_NE(h.Find("b"), nullptr);
  EXPECT_EQ(h.Find("c"), nullptr);
}

TEST(SafetensorsTest, RejectsShortFile) { ExpectError("abc", {"shorter"}); }

TEST(SafetensorsTest, RejectsHeaderLengthPastEnd) {
  std::string bytes = WithHeader("{}", "");
  uint64_t len = 1000;
  std::memcpy(bytes.data(), &len, 8);
  ExpectError(bytes, {"header length 1000 runs past the end"});
}

TEST(SafetensorsTest, RejectsNonJsonHeader) {
  ExpectError(WithHeader("{not json", ""), {"not valid JSON"});
  ExpectError(WithHeader("[1,2]", ""), {"not a JSON object"});
}

TEST(SafetensorsTest, RejectsOutOfRangeOffsets) {
  ExpectError(WithHeader(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')),
              {"tensor 'w'", "out of range"});
  ExpectError(WithHeader(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", std::string(8, '\0')),
              {"tensor 'w'", "out of range"});
}

TEST(SafetensorsTest, RejectsOverlappingOffsets) {
  ExpectError(WithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         std::string(12, '\0')),
              {"tensor 'b'", "overlap", "'a'"});
}

TEST(SafetensorsTest, RejectsUnknownDtype) {
  ExpectError(WithHeader(R"({"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", std::string(16, '\0')),
              {"tensor 'w'", "unknown dtype 'F128'"});
}

TEST(SafetensorsTest, RejectsShapeDisagreeingWithBytes) {
  ExpectError(WithHeader(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
              {"tensor 'w'", "needs 12 bytes"});
  ExpectError(WithHeader(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}})", std::string(8, '\0')),
              {"tensor 'w'", "non-negative"});
  ExpectError(WithHeader(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],)"
                         R"("data_offsets":[0,8]}})",
                         std::string(8, '\0')),
              {"tensor 'w'", "overflows"});
}

TEST(SafetensorsTest, RejectsMalformedEntries) {
  ExpectError(WithHeader(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0')), {"tensor 'w'", "dtype"});
  ExpectError(WithHeader(R"({"w":{"dtype":"F32","shape":[1]}})", std::string(4, '\0')), {"tensor 'w'", "data_offsets"});
  ExpectError(WithHeader(R"({"__metadata__":{"format":1}})", ""), {"__metadata__"});
}

TEST(SafetensorsTest, WriteThenReadRoundTrips) {
  std::string dir = "/tmp/dpo_safetensors_test_" + std::to_string(::getpid());
  MakeDirectories(dir);
  std::string path = JoinPath(dir, "t.safetensors");
  float a[3] = {1.f, 2.f, 3.f};
  uint16_t b[3] = {1, 2, 3};  // odd-sized 2-byte tensor written before a 4-byte one
  WriteSafetensors(path, {{"b", "BF16", {3}, b, sizeof(b)}, {"a", "F32", {3}, a, sizeof(a)}});
  SafetensorsFile file(path);
  EXPECT_EQ(file.header().data_offset % 8, 0u);
  EXPECT_EQ(file.header().metadata.at("format"), "pt");
  const auto* ta = file.header().Find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->begin % 4, 0u);
  auto bytes = file.Bytes(*ta);
  ASSERT_EQ(bytes.size(), sizeof(a));
  EXPECT_EQ(bytes, std::string_view(reinterpret_cast<const char*>(a), sizeof(a)));
  // No temp file is left behind.
  EXPECT_FALSE(PathExists(path + ".tmp." + std::to_string(::getpid())));
  RemoveTree(dir);
}

TEST(SafetensorsTest, WriterRejectsSizeMismatch) {
  float a[3] = {};
  EXPECT_THROW(WriteSafetensors("/tmp/dpo_never.safetensors", {{"a", "F32", {4}, a, sizeof(a)}}), Error);
  EXPECT_FALSE(PathExists("/tmp/dpo_never.safetensors"));
}

TEST(SafetensorsTest, MissingFileNamesPath) {
  try {
    SafetensorsFile f("/nonexistent/x.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.safetensors"), std::string::npos);
  }
}

TEST(SafetensorsTest, IndexParsing) {
  auto map = ParseSafetensorsIndex(SafetensorsIndexJson({{"w", "model-00001-of-00002.safetensors"}}, 4), "index.json");
  EXPECT_EQ(map.at("w"), "model-00001-of-00002.safetensors");
  EXPECT_THROW(ParseSafetensorsIndex("{}", "index.json"), Error);
  EXPECT_THROW(ParseSafetensorsIndex(R"({"weight_map":{"w":"../x"}})", "index.json"), Error);
  EXPECT_THROW(ParseSafetensorsIndex(R"({"weight_map":{"w":3}})", "index.json"), Error);
}

}  // namespace
}  // namespace dpo
