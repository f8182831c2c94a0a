#include "common/util/cli.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace dpo::cli {
namespace {

// Runs Parse over `words` (argv[0] is "prog"); returns its result and what it printed.
struct Outcome {
  std::optional<int> exit;
  std::string out, err;
};

Outcome ParseWords(CLI::App& app, std::vector<std::string> words) {
  words.insert(words.begin(), "prog");
  std::vector<char*> argv;
  argv.reserve(words.size());
  for (std::string& w : words) argv.push_back(w.data());
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  Outcome outcome;
  outcome.exit = Parse(app, static_cast<int>(argv.size()), argv.data());
  outcome.out = testing::internal::GetCapturedStdout();
  outcome.err = testing::internal::GetCapturedStderr();
  return outcome;
}

TEST(CliTest, IntegersAreWholeDecimalNumbersInRange) {
  for (const char* good : {"1", "64", "2147483647"}) {
    CLI::App app("test", "prog");
    int n = 0;
    app.add_option("--n", n)->check(Integer(1));
    EXPECT_EQ(ParseWords(app, {"--n", good}).exit, std::nullopt) << good;
    EXPECT_EQ(std::to_string(n), good);
  }
  for (const char* bad : {"", "2x", "abc", "0", "-2", " 2", "2.5", "0x10", "1e3", "+3", "2147483648"}) {
    CLI::App app("test", "prog");
    int n = 7;
    app.add_option("--n", n)->check(Integer(1));
    const Outcome outcome = ParseWords(app, {"--n", bad});
    EXPECT_EQ(outcome.exit, kExitUsage) << bad;
    EXPECT_NE(outcome.err.find("--n"), std::string::npos) << outcome.err;
    EXPECT_NE(outcome.err.find("expected an integer >= 1"), std::string::npos) << outcome.err;
    EXPECT_EQ(n, 7) << "a refused value must not be stored: " << bad;
  }
}

TEST(CliTest, IntegerRangeIsInclusiveAndNamedInTheError) {
  CLI::App app("test", "prog");
  int n = 0;
  app.add_option("--n", n)->check(Integer(-1, 3));
  EXPECT_EQ(ParseWords(app, {"--n", "-1"}).exit, std::nullopt);
  EXPECT_EQ(n, -1);
  CLI::App again("test", "prog");
  again.add_option("--n", n)->check(Integer(-1, 3));
  const Outcome outcome = ParseWords(again, {"--n", "4"});
  EXPECT_EQ(outcome.exit, kExitUsage);
  EXPECT_NE(outcome.err.find("in [-1, 3]"), std::string::npos) << outcome.err;
}

TEST(CliTest, RealsAreFiniteDecimalsAboveTheBound) {
  for (const auto& [text, value] :
       std::vector<std::pair<const char*, double>>{{"80", 80}, {"0.001", 0.001}, {"1e3", 1000}}) {
    CLI::App app("test", "prog");
    double gib = 0;
    app.add_option("--gib", gib)->check(Real(0, false));
    EXPECT_EQ(ParseWords(app, {"--gib", text}).exit, std::nullopt) << text;
    EXPECT_EQ(gib, value);
  }
  for (const char* bad : {"", "0", "-1", "nan", "inf", "infinity", "0x10", "2x", " 2", "+2"}) {
    CLI::App app("test", "prog");
    double gib = 5;
    app.add_option("--gib", gib)->check(Real(0, false));
    const Outcome outcome = ParseWords(app, {"--gib", bad});
    EXPECT_EQ(outcome.exit, kExitUsage) << bad;
    EXPECT_NE(outcome.err.find("expected a number > 0"), std::string::npos) << outcome.err;
    EXPECT_EQ(gib, 5);
  }
  CLI::App inclusive("test", "prog");
  double rps = 5;
  inclusive.add_option("--rps", rps)->check(Real(0, true));
  EXPECT_EQ(ParseWords(inclusive, {"--rps", "0"}).exit, std::nullopt);
  EXPECT_EQ(rps, 0);
}

TEST(CliTest, FlagsInAnyPositionAndBothSpellings) {
  CLI::App app("test", "prog");
  std::string input;
  int n = 0;
  bool verbose = false;
  app.add_option("input", input)->required();
  app.add_option("--n", n)->check(Integer(0));
  app.add_flag("--verbose", verbose);
  EXPECT_EQ(ParseWords(app, {"--n=3", "file.txt", "--verbose"}).exit, std::nullopt);
  EXPECT_EQ(input, "file.txt");
  EXPECT_EQ(n, 3);
  EXPECT_TRUE(verbose);
}

TEST(CliTest, RepeatedFlagTakesItsLastValueAndListsKeepAll) {
  App app("test", "prog");
  int n = 0;
  std::vector<std::string> roots;
  app.add_option("--n", n)->check(Integer(0));
  app.add_option("--root", roots)->take_all();
  EXPECT_EQ(ParseWords(app, {"--n", "1", "--root", "a", "--n=2", "--root", "b"}).exit, std::nullopt);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(roots, (std::vector<std::string>{"a", "b"}));
}

TEST(CliTest, HelpGoesToStdoutWithStatusZero) {
  CLI::App app("Does one thing.", "prog");
  int n = 0;
  app.add_option("--count", n, "how many")->check(Integer(1));
  const Outcome outcome = ParseWords(app, {"--help"});
  EXPECT_EQ(outcome.exit, kExitOk);
  EXPECT_NE(outcome.out.find("Does one thing."), std::string::npos) << outcome.out;
  EXPECT_NE(outcome.out.find("--count"), std::string::npos) << outcome.out;
  EXPECT_NE(outcome.out.find("how many"), std::string::npos) << outcome.out;
  EXPECT_TRUE(outcome.err.empty());
}

TEST(CliTest, SubcommandHelpIsTheSubcommands) {
  CLI::App app("test", "prog");
  CLI::App* add = app.add_subcommand("add", "adds a thing");
  std::string name;
  add->add_option("name", name, "the thing's name");
  const Outcome outcome = ParseWords(app, {"add", "--help"});
  EXPECT_EQ(outcome.exit, kExitOk);
  EXPECT_NE(outcome.out.find("the thing's name"), std::string::npos) << outcome.out;
}

TEST(CliTest, UnknownFlagsAndMissingValuesAreUsageErrors) {
  for (const std::vector<std::string>& words :
       std::vector<std::vector<std::string>>{{"--nope"}, {"--count"}, {"extra"}, {}}) {
    CLI::App app("test", "prog");
    int n = 0;
    app.add_option("--count", n)->required()->check(Integer(1));
    const Outcome outcome = ParseWords(app, words);
    EXPECT_EQ(outcome.exit, kExitUsage);
    EXPECT_TRUE(outcome.err.starts_with("prog: ")) << outcome.err;
    EXPECT_NE(outcome.err.find("prog --help"), std::string::npos) << outcome.err;
  }
}

}  // namespace
}  // namespace dpo::cli
