// The command-line layer every program shares: CLI11 for the parsing (flags in any position,
// `--name=value` or `--name value`, generated --help), strict validators for numbers, and one
// set of exit statuses (docs/cli.md):
//   0  success, or --help
//   1  the work failed (a file that cannot be read, a failed call, a failed check)
//   2  bad usage: an unknown flag, a missing or malformed value; nothing was done
// dpo-worker adds the codes of common/util/error.h's table (75 interrupted, 76 collective
// timeout, ...).
//
// Numbers are strict: CLI11 alone takes "0x10" as 16 and " 5" as 5, and reals "nan" and "inf";
// the validators below accept only what they name, so `--slots 2x` or `--slots abc` is a usage
// error instead of 2 or 0.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>

namespace dpo::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// CLI::App with the rules every program shares: a flag given twice takes its last value, as the
// hand-written parsers did (scripts append overrides; CLI11 alone refuses the second). Options that
// take several values (`->take_all()`, vectors) keep them all.
class App : public CLI::App {
 public:
  App(std::string description, std::string name) : CLI::App(std::move(description), std::move(name)) {
    option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
};

// A whole decimal number in [min, max]: digits only, an optional leading '-', nothing else.
CLI::Validator Integer(int64_t min, int64_t max = std::numeric_limits<int32_t>::max());
// A finite decimal real, > min (or >= min when `inclusive`): "1e3" and "0.5" yes; "nan", "inf",
// "0x10" and "2x" no.
CLI::Validator Real(double min, bool inclusive);

// Parses argv into `app`. Returns nullopt when the program should go on; otherwise the status to
// exit with: kExitOk after printing the help (of the subcommand named, if any) to stdout, or
// kExitUsage after printing "<program>: <problem>" and a pointer to --help to stderr.
std::optional<int> Parse(CLI::App& app, int argc, char** argv);

}  // namespace dpo::cli
