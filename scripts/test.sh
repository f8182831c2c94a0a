#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), the libFuzzer build (clang, torch-free parsers),
# the main build (g++, LibTorch, CUDA + NCCL when the toolkit is present), then ctest: unit tests,
# oracle tests against transformers/tokenizers/TRL, multi-rank MPI tests and bounded fuzzing;
# then the coordinator alone built with clang (-Wthread-safety as an error, ThreadSanitizer) and
# its unit tests run under TSan.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs=$(nproc)
cmake -S . -B build-fuzz -G Ninja -DDPO_FUZZ_ONLY=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 > build-fuzz.log 2>&1 \
  || { cat build-fuzz.log; exit 1; }
cmake --build build-fuzz -j "$jobs"
cmake -S . -B build -G Ninja -DDPO_FUZZ_DIR="$PWD/build-fuzz" > build.log 2>&1 || { cat build.log; exit 1; }
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs" "$@"
# Torch-free and only the coordinator's targets, so it stays fast. Its locking is checked at
# compile time (ABSL_GUARDED_BY), its races at run time.
cmake -S . -B build-tsan -G Ninja -DDPO_COORDINATOR_ONLY=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
      "-DCMAKE_CXX_FLAGS=-fsanitize=thread -fno-omit-frame-pointer -Wthread-safety -Werror=thread-safety" \
      -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread > build-tsan.log 2>&1 || { cat build-tsan.log; exit 1; }
cmake --build build-tsan -j "$jobs"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ctest --test-dir build-tsan --output-on-failure -j "$jobs"
