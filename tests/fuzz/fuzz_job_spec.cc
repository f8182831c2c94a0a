// Fuzzes the job spec parser (YAML from users and from the RPC API): any bytes either parse or
// throw dpo::Error; never a crash, a hang or unbounded recursion. A spec that parses must also
// survive its own resolved YAML: ParseJobSpec(ToYaml(spec)) == spec.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/config/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  dpo::JobSpec spec;
  try {
    spec = dpo::ParseJobSpec(text, "fuzz.yaml");
  } catch (const dpo::Error&) {
    return 0;
  }
  const std::string yaml = dpo::ToYaml(spec);
  try {
    if (!(dpo::ParseJobSpec(yaml, "resolved.yaml") == spec)) std::abort();
  } catch (const dpo::Error&) {
    std::abort();  // the resolved spec of a valid spec must be valid
  }
  return 0;
}
