#!/usr/bin/env bash
# check_tidy.sh BUILD_DIR [FILE...]: clang-tidy-14 with the checks of the root .clang-tidy over our
# translation units in BUILD_DIR/compile_commands.json (those under common/, coordinator/, worker/,
# bench/ and tests/; generated code such as *.pb.cc is not ours), or over the FILEs given (paths
# relative to the source tree or absolute: to check the files of a change). Runs nproc clang-tidy
# processes at a time, prints each finding and exits 1 if there is one (every warning is an
# error), 2 on a usage error. Run by ctest (test clang_tidy, build-asan).
set -uo pipefail
if [ $# -lt 1 ] || [ ! -f "$1/compile_commands.json" ]; then
  echo "usage: $0 BUILD_DIR [FILE...]  (BUILD_DIR configured with CMAKE_EXPORT_COMPILE_COMMANDS)" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
shift
cd "$(dirname "$0")/../.."
source_dir=$PWD

if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(python3 - "$build/compile_commands.json" "$source_dir" <<'EOF'
import json, os, re, sys
entries, root = json.load(open(sys.argv[1])), sys.argv[2]
ours = re.compile(r"(common|coordinator|worker|bench|tests)/.*\.cc$")
for path in sorted({os.path.relpath(e["file"], root) for e in entries}):
    if ours.match(path) and not path.endswith(".pb.cc"):
        print(path)
EOF
)
fi
[ "${#files[@]}" -gt 0 ] || { echo "check_tidy: no translation units of ours in $build" >&2; exit 2; }

# Each file's findings go to its own log, printed whole afterwards (parallel output interleaves).
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
printf '%s\n' "${files[@]}" | xargs -d '\n' -P "$(nproc)" -I{} sh -c \
  'clang-tidy-14 --quiet -p "$1" --warnings-as-errors="*" "$2" > "$3/$(echo "$2" | tr / _).log" 2>&1 ||
     echo "$2" >> "$3/failed"' _ "$build" {} "$logs"

if [ ! -f "$logs/failed" ]; then
  echo "check_tidy: ok (${#files[@]} files)"
  exit 0
fi
for file in $(sort "$logs/failed"); do
  grep -v -E '^[0-9]+ (warning|error)s? (generated|treated as errors?)\.$' "$logs/$(echo "$file" | tr / _).log"
done
echo "check_tidy: findings in $(wc -l < "$logs/failed") of ${#files[@]} files:"
sort "$logs/failed" | sed 's/^/  /'
exit 1
