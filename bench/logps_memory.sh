#!/usr/bin/env bash
# Peak memory of one forward + backward of the completion log-probs, chunked vs full logits,
# each configuration in its own process (max RSS is a per-process high-water mark).
#   bench/logps_memory.sh BUILD_DIR [BATCH] [TIME]     (defaults: 2 1024; vocab 151936, hidden 896)
# The full-logits runs need about 3 x BATCH x TIME x 151936 x 4 bytes: mind the machine's memory.
set -euo pipefail
bin="${1:?usage: logps_memory.sh BUILD_DIR [BATCH] [TIME]}/bin/logps-memory-bench"
batch="${2:-2}"
time="${3:-1024}"
shape=(--batch "$batch" --time "$time" --vocab 151936 --hidden 896)
"$bin" --impl chunked --chunk 128 "${shape[@]}"
"$bin" --impl chunked --chunk 512 "${shape[@]}"
"$bin" --impl plain "${shape[@]}"
"$bin" --impl reference "${shape[@]}"
