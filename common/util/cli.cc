#include "common/util/cli.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>

namespace dpo::cli {
namespace {

bool IsDecimalReal(const std::string& text) {
  // from_chars alone would also take "nan", "inf" and "infinity"; a leading '+', spaces and hex
  // it refuses itself.
  for (const char c : text) {
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == 'e' || c == 'E')) {
      return false;
    }
  }
  return !text.empty();
}

}  // namespace

CLI::Validator Integer(int64_t min, int64_t max) {
  const std::string range = max == std::numeric_limits<int32_t>::max() || max == std::numeric_limits<int64_t>::max()
                                ? "an integer >= " + std::to_string(min)
                                : "an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
  return CLI::Validator(
      [min, max, range](std::string& text) -> std::string {
        int64_t value = 0;
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        if (text.empty() || error != std::errc() || stop != end || value < min || value > max) {
          return "expected " + range + ", got \"" + text + "\"";
        }
        return "";
      },
      min == 1   ? "INT > 0"
      : min == 0 ? "INT >= 0"
                 : "INT",
      "");
}

CLI::Validator Real(double min, bool inclusive) {
  char min_text[32];
  std::snprintf(min_text, sizeof min_text, "%g", min);
  const std::string bound = (inclusive ? ">= " : "> ") + std::string(min_text);
  return CLI::Validator(
      [min, inclusive, bound](std::string& text) -> std::string {
        double value = 0;
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        const bool ok = IsDecimalReal(text) && error == std::errc() && stop == end && std::isfinite(value) &&
                        (inclusive ? value >= min : value > min);
        return ok ? "" : "expected a number " + bound + ", got \"" + text + "\"";
      },
      "NUMBER " + bound, "");
}

std::optional<int> Parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return kExitOk;
  } catch (const CLI::CallForAllHelp&) {
    std::fputs(app.help("", CLI::AppFormatMode::All).c_str(), stdout);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: %s\nRun '%s --help' for the usage.\n", app.get_name().c_str(), e.what(),
                 app.get_name().c_str());
    return kExitUsage;
  }
}

}  // namespace dpo::cli
