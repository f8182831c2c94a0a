#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/util/error.h"
#include "common/util/hash.h"
#include "common/util/mapped_file.h"

namespace dpo {
namespace {

TEST(MappedFileTest, MapsContentsAndNamesMissingFile) {
  auto path = std::filesystem::temp_directory_path() / "dpo_util_test.bin";
  { std::ofstream(path) << "hello"; }
  MappedFile file(path.string());
  EXPECT_EQ(file.view(), "hello");
  try {
    MappedFile missing("/nonexistent/dir/x.bin");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/x.bin"), std::string::npos);
  }
  std::filesystem::remove(path);
}

TEST(MappedFileTest, RefusesFifoAndDirectoryWithoutBlocking) {
  // A FIFO with no writer would block a plain open() forever; it must fail at once instead.
  auto fifo = std::filesystem::temp_directory_path() / ("dpo_util_test_fifo_" + std::to_string(::getpid()));
  std::filesystem::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& path : {fifo.string(), std::filesystem::temp_directory_path().string()}) {
    try {
      MappedFile file(path);
      FAIL() << "expected an error for " << path;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), path + ": not a regular file");
    }
  }
  std::filesystem::remove(fifo);
}

TEST(HasherTest, KnownFnv1aValueAndOrderSensitivity) {
  // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (published test vector).
  EXPECT_EQ(Hasher().Update("a").Digest(), 0xaf63dc4c8601ec8cULL);
  EXPECT_NE(Hasher().Update("ab").Digest(), Hasher().Update("ba").Digest());
  EXPECT_EQ(Hasher().Update("a").HexDigest(), "af63dc4c8601ec8c");
}

}  // namespace
}  // namespace dpo
