#include "common/util/atomic_file.h"

#include <dirent.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/util/error.h"
#include "common/util/path_util.h"
#include "common/util/scratch_dir_test_util.h"

namespace dpo {
namespace {

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  return names;
}

TEST(AtomicFileTest, ReplacesTheFileAndLeavesNoTemporary) {
  testing::ScratchDir scratch("atomic_file_test");
  const std::string path = JoinPath(scratch.path(), "status.json");
  WriteFileAtomically(path, "first");
  WriteFileAtomically(path, "second, longer");
  EXPECT_EQ(ReadWholeFile(path), "second, longer");
  EXPECT_EQ(Entries(scratch.path()), std::vector<std::string>{"status.json"});
}

TEST(AtomicFileTest, UncommittedWriterLeavesTheOldFile) {
  testing::ScratchDir scratch("atomic_file_test");
  const std::string path = JoinPath(scratch.path(), "state.json");
  WriteFileAtomically(path, "old");
  {
    AtomicWriter writer(path);
    writer.Write("new", 3);
  }  // no Commit(): an exception while writing ends the same way
  EXPECT_EQ(ReadWholeFile(path), "old");
  EXPECT_EQ(Entries(scratch.path()), std::vector<std::string>{"state.json"});
}

TEST(AtomicFileTest, MissingDirectoryNamesTheFile) {
  testing::ScratchDir scratch("atomic_file_test");
  const std::string path = JoinPath(scratch.path(), "no/such/dir/file");
  try {
    WriteFileAtomically(path, "x");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/dir/file"), std::string::npos) << e.what();
  }
}

TEST(PathUtilTest, JoinsAndSplitsPaths) {
  EXPECT_EQ(JoinPath("a", "b"), "a/b");
  EXPECT_EQ(JoinPath("a/", "b"), "a/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
  EXPECT_EQ(BaseName("/x/y.json"), "y.json");
  EXPECT_EQ(DirName("/x/y.json"), "/x");
  EXPECT_EQ(DirName("/y"), "/");
  EXPECT_EQ(DirName("y"), ".");
}

}  // namespace
}  // namespace dpo
