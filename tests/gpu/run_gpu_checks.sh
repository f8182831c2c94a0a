#!/usr/bin/env bash
# run_gpu_checks.sh [BUILD_DIR]
# Everything issue 4 asks of a GPU machine, in one call (Ubuntu 24.04, CUDA torch in
# /opt/torch/.venv; carry .gpu-deps made by tests/gpu/fetch_deps.sh):
#   1. builds dpo-model-check and dpo-worker against that machine's LibTorch;
#   2. prints the model's precision table for a small random Llama (GQA, llama3 RoPE) and Qwen3
#      (q/k norm, biases, tied) model:
#        cuda bf16 vs cuda fp32 logits   relative error (max|d| / max|ref|) <= 1e-2
#        cuda fp32 vs cpu fp32 logits    relative error <= 1e-4
#   3. runs bench/gpu_dpo_bench.py: Qwen2.5-0.5B shape, bf16, max_length 1024, ours at 16 pairs
#      per batch against the lean PyTorch step at 8 (where issue 4 measured it; it ran out of
#      memory at 16), and writes the JSON to $OUT/gpu_dpo_bench.json when $OUT is set.
#   4. the same benchmark with train.sharding: full on one rank (each layer gathered into bf16
#      and freed around its use, the reference sharded too: the sharded path on NCCL), ours only,
#      to $OUT/gpu_dpo_bench_full.json.
# Exits non-zero if the build fails or any check fails. Not part of ctest (no GPU in CI); the
# CPU half of step 2 runs there as PrecisionCheckTest in model_test.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-gpu}
python=${DPO_PYTHON:-/opt/torch/.venv/bin/python}
generator=()
command -v ninja > /dev/null && generator=(-G Ninja)

# Libraries the GPU machine lacks travel as Debian packages (tests/gpu/fetch_deps.sh, carried
# as .gpu-deps) and are unpacked into a private sysroot that pkg-config and the loader use.
if compgen -G "$root/.gpu-deps/*.deb" > /dev/null; then
  sysroot=/tmp/dpo-gpu-deps
  for deb in "$root"/.gpu-deps/*.deb; do dpkg -x "$deb" "$sysroot"; done
  # zlib1g-dev's libz.so points at Debian's exact runtime version; use the host's libz.so.1.
  ln -sf /lib/x86_64-linux-gnu/libz.so.1 "$sysroot/usr/lib/x86_64-linux-gnu/libz.so"
  export PKG_CONFIG_SYSROOT_DIR=$sysroot
  export PKG_CONFIG_PATH=$sysroot/usr/lib/x86_64-linux-gnu/pkgconfig
  export CMAKE_PREFIX_PATH=$sysroot/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
  export LD_LIBRARY_PATH=$sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

"$python" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
# DPO_WERROR=OFF: another machine's compiler at -O3 may warn where CI's does not (-Wmaybe-uninitialized
# and friends); warnings are CI's check, this script measures.
cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DDPO_PYTHON="$python" \
      -DDPO_BUILD_TESTS=OFF -DDPO_BUILD_BENCH=OFF -DDPO_WERROR=OFF
cmake --build "$build" --target dpo-model-check dpo-worker -j "$(nproc)"
"$build/bin/dpo-model-check" precision --device cuda

# The benchmark runs in this shell so that it sees the private sysroot too.
result=${OUT:-$build}/gpu_dpo_bench.json
DPO_BINARY_DIR=$build DPO_SHARED_DIR=$root/.gpu-deps/shared \
  "$python" "$root/bench/gpu_dpo_bench.py" --device cuda --batch "${DPO_GPU_BATCH:-16}" \
  --lean-batch "${DPO_GPU_LEAN_BATCH:-8}" | tee "$result"

# Step 4: full sharding on one GPU rank, against the same validation.
DPO_BINARY_DIR=$build DPO_SHARED_DIR=$root/.gpu-deps/shared \
  "$python" "$root/bench/gpu_dpo_bench.py" --device cuda --batch "${DPO_GPU_BATCH:-16}" \
  --sharding full --skip-lean | tee "${OUT:-$build}/gpu_dpo_bench_full.json"
