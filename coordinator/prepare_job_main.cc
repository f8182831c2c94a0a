// dpo-prepare-job JOB.yaml: tokenizes a resolved job spec's data sets into their prepared files
// (common/config/data_preparation.h), as the worker would. dpo-coordinator runs it as a child
// process per job, so that preparation that blocks (a FIFO as data.train) or runs too long can be
// killed without stopping the coordinator. Exit status 0, 1 with the one-line reason (file:line
// for bad data) as the last line of stderr, or 2 on bad usage (docs/cli.md).
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/config/data_preparation.h"
#include "common/config/job_spec.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/cli.h"
#include "common/util/error.h"

int main(int argc, char** argv) {
  dpo::cli::App app(
      "Tokenizes a resolved job spec's data sets into their prepared files, as the worker\n"
      "would; dpo-coordinator runs it once per job.",
      "dpo-prepare-job");
  std::string spec_path;
  app.add_option("JOB.yaml", spec_path, "the resolved job spec")->required();
  if (const auto exit = dpo::cli::Parse(app, argc, argv)) return *exit;
  try {
    std::ifstream in(spec_path, std::ios::binary);
    if (!in) dpo::Fail(spec_path, "cannot read");
    std::ostringstream text;
    text << in.rdbuf();
    const dpo::JobSpec spec = dpo::ParseJobSpec(text.str(), spec_path);
    const auto tokenizer = dpo::Tokenizer::Load(spec.tokenizer.path);
    std::vector<std::string> sources{spec.data.train};
    if (spec.data.eval) sources.push_back(*spec.data.eval);
    for (const std::string& source : sources) {
      if (dpo::PrepareForSpec(*tokenizer, spec.data, source).report.pairs == 0) {
        dpo::Fail(source, "no usable preference pairs after preparation");
      }
    }
  } catch (const std::exception& e) {
    std::string reason = e.what();
    for (char& c : reason) c = c == '\n' ? ' ' : c;
    std::fprintf(stderr, "%s\n", reason.c_str());
    return dpo::cli::kExitFailure;
  }
  return dpo::cli::kExitOk;
}
