#!/usr/bin/env bash
# The real-model job: DPO on the bundled HH-RLHF sample from SmolLM2-135M-Instruct
# (examples/smollm2_hh.yaml; set-up converts the model into models/), then dpo-eval scores the
# 32 training pairs and the 48 held-out pairs with the trained policy against the pretrained
# model. Sized for a few minutes on 2 idle CPU cores (docs/real_model.md has the timings).
# Each score file holds both sides, so one pass gives "before" (the reference's columns) and
# "after" (the policy's). Results and their reading: docs/real_model.md.
#   RANKS=2 scripts/demo_smollm2.sh   runs the training as 2 MPI ranks
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -G Ninja > build.log 2>&1 || { cat build.log; exit 1; }
cmake --build build --target dpo-worker dpo-eval

model=models/smollm2-135m-instruct
out=out/smollm2_hh
rm -rf "$out"
start=$(date +%s)
scripts/run_worker.sh examples/smollm2_hh.yaml
echo "training took $(( $(date +%s) - start )) s; metrics: $out/metrics.jsonl"

policy=$(ls -d "$out"/checkpoint-* | sort -t- -k2 -n | tail -n 1)/model
start=$(date +%s)
for split in sample32 heldout; do
  # --max-length as in training, so both sets are scored on the tokens the policy was trained on.
  build/bin/dpo-eval --policy "$policy" --reference "$model" --data "examples/data/hh_rlhf_$split.jsonl" \
    --beta 0.1 --max-length 128 --output "$out/scores_$split.jsonl" --device cpu
done
echo "scoring took $(( $(date +%s) - start )) s"
.venv/bin/python scripts/summarize_scores.py "$out/scores_sample32.jsonl" "$out/scores_heldout.jsonl"
