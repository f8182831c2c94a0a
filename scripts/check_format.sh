#!/usr/bin/env bash
# Lists the C++ files that clang-format (.clang-format at the root) would change, and exits 1 if
# there are any. Changes nothing. Not run by CI yet: the tree is reformatted in one commit of its
# own first, so that the reformat does not collide with work in progress.
#   scripts/check_format.sh            every tracked .cc/.h file
#   scripts/check_format.sh FILE...    only these (e.g. the files of one change)
# CLANG_FORMAT names the binary (default: clang-format-14, the version scripts/setup.sh installs).
set -euo pipefail
cd "$(dirname "$0")/.."
clang_format=${CLANG_FORMAT:-clang-format-14}
if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(git ls-files '*.cc' '*.h')
fi
differ=0
for file in "${files[@]}"; do
  if ! "$clang_format" --style=file --dry-run --Werror "$file" > /dev/null 2>&1; then
    echo "$file"
    differ=$((differ + 1))
  fi
done
if [ "$differ" -gt 0 ]; then
  echo "check_format: $differ of ${#files[@]} files differ from .clang-format ($clang_format -i FILE fixes one)" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files match .clang-format" >&2
