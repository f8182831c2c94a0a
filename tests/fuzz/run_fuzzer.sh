#!/usr/bin/env bash
# run_fuzzer.sh BINARY SEED_DIR SECONDS [extra libFuzzer flags]
# Runs a libFuzzer target for a bounded time on a scratch copy of its seeds, so the source tree
# is never written to. Fails on any crash, leak, sanitizer report or timeout of one input.
set -euo pipefail
bin=$1 seeds=$2 seconds=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
[ -d "$seeds" ] && cp -r "$seeds"/. "$work/corpus/"
cd "$work"
exec "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@" corpus
