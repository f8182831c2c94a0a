#include "common/data/line_reader.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/data/data_test_util.h"
#include "common/util/error.h"

namespace dpo {
namespace {

using testing::ScratchFile;

std::vector<std::string> ReadAll(const std::string& path) {
  LineReader reader(path);
  std::vector<std::string> lines;
  std::string line;
  while (reader.Next(&line)) lines.push_back(line);
  return lines;
}

TEST(LineReaderTest, PlainAndGzipGiveTheSameLines) {
  // Long enough to cross several 64 KiB read chunks.
  std::string text;
  for (int i = 19999; i >= 0; --i) text += "line " + std::to_string(i) + "\n";
  text += "a\r\nbb\n\nlast-without-newline";
  ScratchFile plain("plain.jsonl"), gz("z.jsonl.gz");
  plain.Write(text);
  gz.WriteGzip(text);
  auto lines = ReadAll(plain.path());
  ASSERT_EQ(lines.size(), 20004u);
  EXPECT_EQ(lines[0], "line 19999");
  EXPECT_EQ(lines[20000], "a");
  EXPECT_EQ(lines[20002], "");
  EXPECT_EQ(lines[20003], "last-without-newline");
  EXPECT_EQ(ReadAll(gz.path()), lines);
}

TEST(LineReaderTest, TruncatedGzipNamesFileAndLine) {
  std::string text;
  for (int i = 0; i < 5000; ++i) text += "{\"chosen\": \"x" + std::to_string(i * 7919) + "\"}\n";
  ScratchFile gz("trunc.jsonl.gz");
  gz.WriteGzip(text);
  std::filesystem::resize_file(gz.path(), std::filesystem::file_size(gz.path()) / 2);
  try {
    ReadAll(gz.path());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find(gz.path() + ":"), std::string::npos) << what;
    EXPECT_NE(what.find("truncated"), std::string::npos) << what;
  }
}

TEST(LineReaderTest, LineOverTheLimitFailsWithFileAndLine) {
  // Line 2 is 1 MiB, over a 64 KiB limit; plain and gzip fail alike, at line 2.
  const std::string text = "short\n" + std::string(1 << 20, 'x') + "\nafter\n";
  ScratchFile plain("long.jsonl"), gz("long.jsonl.gz");
  plain.Write(text);
  gz.WriteGzip(text);
  for (const ScratchFile* file : {&plain, &gz}) {
    LineReader reader(file->path(), 64 << 10);
    std::string line;
    ASSERT_TRUE(reader.Next(&line));
    EXPECT_EQ(line, "short");
    try {
      reader.Next(&line);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.rfind(file->path() + ":2: line is longer than 65536 bytes", 0), 0u) << what;
    }
  }
  // A line of exactly the limit passes.
  ScratchFile exact("exact.jsonl");
  exact.Write(std::string(64 << 10, 'y') + "\n");
  LineReader reader(exact.path(), 64 << 10);
  std::string line;
  ASSERT_TRUE(reader.Next(&line));
  EXPECT_EQ(line.size(), size_t{64} << 10);
}

TEST(LineReaderTest, FifoFailsAtOnce) {
  ScratchFile fifo("data.fifo");
  ASSERT_EQ(::mkfifo(fifo.path().c_str(), 0600), 0);
  try {
    LineReader reader(fifo.path());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), fifo.path() + ": not a regular file");
  }
}

TEST(LineReaderTest, UnreadableFileNamesPath) {
  try {
    LineReader reader("/nonexistent/dir/data.jsonl");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/data.jsonl: cannot open"), std::string::npos) << e.what();
  }
  // A directory opens but cannot be read.
  EXPECT_THROW(ReadAll(std::filesystem::temp_directory_path().string()), Error);
}

}  // namespace
}  // namespace dpo
