// dpo-prepare-job JOB.yaml: tokenizes a resolved job spec's data sets into their prepared files
// (common/config/data_preparation.h), as the worker would. dpo-coordinator runs it as a child
// process per job, so that preparation that blocks (a FIFO as data.train) or runs too long can be
// killed without stopping the coordinator. Exit status 0, or 1 with the one-line reason (file:line
// for bad data) as the last line of stderr.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/config/data_preparation.h"
#include "common/config/job_spec.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/error.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fputs("usage: dpo-prepare-job JOB.yaml\n", stderr);
    return 2;
  }
  try {
    std::ifstream in(argv[1], std::ios::binary);
    if (!in) dpo::Fail(argv[1], "cannot read");
    std::ostringstream text;
    text << in.rdbuf();
    const dpo::JobSpec spec = dpo::ParseJobSpec(text.str(), argv[1]);
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
    return 1;
  }
  return 0;
}
