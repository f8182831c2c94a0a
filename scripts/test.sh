#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), then three builds, each with its ctest run:
#   build-asan  the torch-free core (util, tokenizer, data, config, the model's parsers) and the
#               job service, clang with AddressSanitizer + UBSan: their unit tests, the libFuzzer
#               targets, each fuzzed for 30 s, and clang-tidy over their sources (first: the
#               cheapest, ~100 compile steps, tests 2 min + clang-tidy 7 min on 2 cores)
#   build       everything (g++, LibTorch, CUDA + NCCL when the toolkit is present): unit tests,
#               oracle tests against transformers/tokenizers/TRL, multi-rank MPI and integration
#   build-tsan  the same torch-free targets as build-asan, clang with ThreadSanitizer and
#               -Wthread-safety as an error: their locking checked at compile time
#               (ABSL_GUARDED_BY), their races at run time
# Every build treats -Wall -Wextra warnings in our code as errors (DPO_WERROR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs=$(nproc)

# configure DIR [cmake args...]: configures DIR quietly (its log in DIR.log, shown on failure).
configure() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja "$@" > "$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
}
clang=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 -DDPO_WERROR=ON)

configure build-asan -DDPO_TORCH_FREE=ON -DDPO_SANITIZE=address,undefined -DDPO_FUZZERS=ON "${clang[@]}"
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS="halt_on_error=1 detect_stack_use_after_return=1" UBSAN_OPTIONS="print_stacktrace=1" \
  ctest --test-dir build-asan --output-on-failure -j "$jobs"

configure build -DDPO_WERROR=ON
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs" "$@"

configure build-tsan -DDPO_TORCH_FREE=ON -DDPO_SANITIZE=thread "${clang[@]}" \
          "-DCMAKE_CXX_FLAGS=-Wthread-safety -Werror=thread-safety"
cmake --build build-tsan -j "$jobs"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ctest --test-dir build-tsan --output-on-failure -j "$jobs"
