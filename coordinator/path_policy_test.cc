#include "coordinator/path_policy.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/util/error.h"

namespace dpo {
namespace {

namespace fs = std::filesystem;

class PathPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("path_policy_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    for (const char* dir : {"in", "out", "outside"}) fs::create_directories(root_ / dir);
    std::ofstream(root_ / "in" / "train.jsonl") << "{}\n";
    std::ofstream(root_ / "outside" / "secret") << "the first line\n";
    roots_.read = {(root_ / "in").string()};
    roots_.write = (root_ / "out").string();
  }
  void TearDown() override { fs::remove_all(root_); }

  JobSpec Spec() const {
    JobSpec spec;
    spec.tokenizer.path = (root_ / "in").string();
    spec.data.train = (root_ / "in" / "train.jsonl").string();
    spec.data.prepared_dir = (root_ / "out" / "job" / "prepared").string();
    spec.output.dir = (root_ / "out" / "job").string();
    return spec;
  }
  // The refusal text, or "" when accepted.
  std::string Refusal(JobSpec spec, const PathRoots& roots) const {
    try {
      ConfinePaths(spec, roots);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path root_;
  PathRoots roots_;
};

TEST_F(PathPolicyTest, SpellingsOfOneDirectoryResolveAlike) {
  const std::string x = (root_ / "out").string();
  const std::string missing = (root_ / "out" / "new").string();
  for (const std::string& spelling : {x + "/", "/." + x, "/" + x, x + "/../out/."}) {
    EXPECT_EQ(ResolvePath(spelling), x) << spelling;
  }
  EXPECT_EQ(ResolvePath(missing + "/"), missing);
  EXPECT_EQ(ResolvePath("/" + missing + "/./a/.."), missing);
}

TEST_F(PathPolicyTest, InsideRootsIsAcceptedAndRewrittenToRealPaths) {
  fs::create_symlink(root_ / "in" / "train.jsonl", root_ / "in" / "link.jsonl");
  JobSpec spec = Spec();
  spec.data.train = (root_ / "in" / "." / "link.jsonl").string();
  spec.output.dir += "/";
  ConfinePaths(spec, roots_);
  EXPECT_EQ(spec.data.train, (root_ / "in" / "train.jsonl").string());
  EXPECT_EQ(spec.output.dir, (root_ / "out" / "job").string());
  EXPECT_EQ(spec.output.metrics_file, (root_ / "out" / "job" / "metrics.jsonl").string());
}

TEST_F(PathPolicyTest, EscapesAreRefusedNamingTheField) {
  fs::create_symlink(root_ / "outside" / "secret", root_ / "in" / "escape");
  JobSpec dotdot = Spec();
  dotdot.data.train = (root_ / "in" / ".." / "outside" / "secret").string();
  EXPECT_EQ(Refusal(dotdot, roots_), "data.train: \"" + dotdot.data.train + "\" is not inside the read roots");
  JobSpec link = Spec();
  link.tokenizer.path = (root_ / "in" / "escape").string();
  EXPECT_EQ(Refusal(link, roots_), "tokenizer.path: \"" + link.tokenizer.path + "\" is not inside the read roots");
  JobSpec out = Spec();
  out.output.dir = (root_ / "out" / ".." / "outside").string();
  EXPECT_NE(Refusal(out, roots_).find("output.dir: "), std::string::npos);
  JobSpec metrics = Spec();
  metrics.output.metrics_file = (root_ / "outside" / "secret").string();
  EXPECT_NE(Refusal(metrics, roots_).find("output.metrics_file: "), std::string::npos);
  metrics.output.metrics_file = "../elsewhere.jsonl";
  EXPECT_NE(Refusal(metrics, roots_).find("is not inside output.dir"), std::string::npos);
}

TEST_F(PathPolicyTest, RefusalDoesNotTellWhetherAnOutsideFileExists) {
  JobSpec existing = Spec(), missing = Spec();
  existing.data.train = (root_ / "outside" / "secret").string();
  missing.data.train = (root_ / "outside" / "no-such-file").string();
  const std::string a = Refusal(existing, roots_), b = Refusal(missing, roots_);
  EXPECT_EQ(a.substr(a.find("\" ")), b.substr(b.find("\" ")));
  EXPECT_EQ(a.find("the first line"), std::string::npos);
}

TEST_F(PathPolicyTest, FifosAndDevicesAreRefusedEvenUnconfined) {
  const fs::path fifo = root_ / "in" / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const PathRoots& roots : {roots_, PathRoots{}}) {
    JobSpec spec = Spec();
    spec.data.train = fifo.string();  // would block whoever opened it
    EXPECT_EQ(Refusal(spec, roots), "data.train: \"" + fifo.string() + "\" is not a regular file or directory");
    spec = Spec();
    spec.output.metrics_file = "fifo";
    fs::create_directories(spec.output.dir);
    ASSERT_EQ(::mkfifo((fs::path(spec.output.dir) / "fifo").c_str(), 0600), 0);
    EXPECT_NE(Refusal(spec, roots).find("output.metrics_file: \"fifo\" is not a regular file"), std::string::npos);
    fs::remove(fs::path(spec.output.dir) / "fifo");
  }
  JobSpec zero = Spec();
  zero.data.train = "/dev/zero";
  EXPECT_EQ(Refusal(zero, PathRoots{}), "data.train: \"/dev/zero\" is not a regular file or directory");
}

TEST_F(PathPolicyTest, NulBytesAreRefused) {
  JobSpec spec = Spec();
  spec.data.train = (root_ / "in" / "train.jsonl").string() + std::string(1, '\0') + "/../../x";
  EXPECT_EQ(Refusal(spec, PathRoots{}), "data.train: contains a NUL byte");
}

TEST_F(PathPolicyTest, SingleUserModeAcceptsAnyRegularPathAndMissingInputs) {
  JobSpec spec = Spec();
  spec.data.train = (root_ / "outside" / "no-such-file").string();
  spec.output.dir = (root_ / "outside" / "run").string();
  EXPECT_EQ(Refusal(spec, PathRoots{}), "");
  EXPECT_NE(Refusal(spec, roots_).find('\n'), std::string::npos);  // both fields, one line each
}

}  // namespace
}  // namespace dpo
