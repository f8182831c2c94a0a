#!/usr/bin/env bash
# Regenerates the table in docs/memory_plan.md: `dpo-worker --plan` for the shapes in
# examples/shapes/ on 1, 8 and 64 GPUs of 80 GiB, with bf16 on, model.dtype float32, one pair
# of 2048 tokens per rank, gradient checkpointing and a reference model. Prints Markdown.
#   docs/make_memory_plan_table.sh [BUILD_DIR]    (default: build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
worker="${1:-$root/build}/bin/dpo-worker"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "| model | parameters | GPUs | none | optimizer | full |"
echo "| --- | ---: | ---: | --- | --- | --- |"
for shape in qwen2.5-0.5b llama-3-8b llama-3-70b; do
  # model.device: cuda and train.bf16: true plan for GPUs wherever this script runs.
  cat > "$work/$shape.yaml" <<EOF
model: {random: {config: "$root/examples/shapes/$shape.json"}, dtype: float32, device: cuda}
tokenizer: {path: "$root/examples/tokenizer"}
data: {train: "$root/examples/data/hh_rlhf_sample.jsonl", max_length: 2048}
train: {bf16: true, per_device_train_batch_size: 1, gradient_checkpointing: true}
reference: {mode: model}
output: {dir: "$work/out"}
EOF
  for gpus in 1 8 64; do
    plan="$("$worker" --plan "$work/$shape.yaml" --ranks "$gpus" --gpu-memory 80)"
    # "N parameters (largest layer ...)" from the first line; the total row; one fits line per mode.
    awk -v shape="$shape" -v gpus="$gpus" '
      NR == 1 { for (i = 1; i < NF; ++i) if ($(i + 1) == "parameters") params = $i }
      $1 == "total" { none = $2; optimizer = $3; full = $4 }
      $2 == "fits" { fits[$1] = "fits" }
      $2 == "does" { fits[$1] = "does not fit" }
      END {
        printf "| %s | %.2fB | %d | %s GiB, %s | %s GiB, %s | %s GiB, %s |\n", shape, params / 1e9, gpus,
               none, fits["none:"], optimizer, fits["optimizer:"], full, fits["full:"]
      }' <<< "$plan"
  done
done
