#!/usr/bin/env bash
# The main job: builds the worker, trains a small random Llama with DPO on the bundled HH-RLHF
# sample (examples/job.yaml), then scores held-out pairs with the trained policy against its
# reference (dpo-eval). Works on a fresh clone; set-up is idempotent.
#   RANKS=2 scripts/demo.sh   runs the training as 2 MPI ranks
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -G Ninja > build.log 2>&1 || { cat build.log; exit 1; }
cmake --build build --target dpo-worker dpo-eval

out=out/demo
rm -rf "$out"
scripts/run_worker.sh examples/job.yaml
echo "metrics: $out/metrics.jsonl (last line below)"
tail -n 1 "$out/metrics.jsonl"

latest=$(ls -d "$out"/checkpoint-* | sort -t- -k2 -n | tail -n 1)
build/bin/dpo-eval --policy "$latest/model" --reference "$out/initial-policy" \
  --data examples/data/hh_rlhf_heldout.jsonl --beta 0.1 --output "$out/heldout_scores.jsonl" \
  --device cpu
