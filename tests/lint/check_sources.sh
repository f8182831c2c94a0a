#!/usr/bin/env bash
# check_sources.sh [SOURCE_DIR]: the rules of the code that no compiler checks. Prints every
# offending line as file:line and exits 1 if there is one. Run by ctest (test source_rules).
#
# 1. No std::filesystem::remove_all in code that can be linked with LibTorch (everything but
#    coordinator/, which never is). libtorch.so exports its own build of libstdc++'s
#    std::filesystem, and in a binary linked with it our calls bind to that copy (LD_DEBUG=bindings
#    shows it); its remove_all crashed by jumping to a null pointer (commit 7f8ad51). RemoveTree
#    (common/util/path_util.h) is the replacement. The rest of std::filesystem works there.
# 2. The coordinator depends on no engine area: it includes nothing of common/model,
#    common/loss, common/tensor or worker/ (the build links it without them; this catches a
#    header-only use as well).
set -uo pipefail
cd "${1:-$(dirname "$0")/../..}"
status=0
report() {  # report RULE LINES: LINES are grep's file:line:text matches, possibly none
  [ -n "$2" ] || return 0
  printf '%s\n' "$2"
  echo "  -> $1"
  status=1
}
sources() { git ls-files --cached --others --exclude-standard -- "$@" | grep -E '\.(cc|h)$'; }

report "std::filesystem::remove_all in code linked with LibTorch: use RemoveTree (common/util/path_util.h)" \
  "$(sources common worker bench tests | xargs -r grep -nE 'remove_all\s*\(' | grep -vE '^[^:]+:[0-9]+:\s*//')"
report "the coordinator must not depend on the model, loss, tensor or worker areas" \
  "$(sources coordinator | xargs -r grep -nE '#include "(common/(model|loss|tensor)|worker)/')"

[ "$status" -eq 0 ] && echo "check_sources: ok"
exit "$status"
