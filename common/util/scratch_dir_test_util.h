// A test's own empty directory, /tmp/dpo_<tag>_<pid>_<test name>, removed with what it holds when
// the test ends (RemoveTree: std::filesystem::remove_all crashes in binaries linked with torch).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "common/util/path_util.h"

namespace dpo::testing {

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag)
      : path_("/tmp/dpo_" + tag + "_" + std::to_string(::getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()) {
    RemoveTree(path_);
    MakeDirectories(path_);
  }
  ~ScratchDir() { RemoveTree(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace dpo::testing
