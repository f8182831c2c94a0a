#!/usr/bin/env bash
# Run HERE (Debian 12) before a GPU session: downloads the Debian packages of the libraries the
# engine needs and the GPU machine lacks (PCRE2 and utf8proc headers/libraries, zlib headers),
# plus the qwen3 tokenizer and HH-RLHF pairs from ../shared, into .gpu-deps/, which git ignores. Name .gpu-deps in the device run's `carry`;
# run_gpu_checks.sh unpacks them into a private sysroot there (never into /).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu-deps
cd .gpu-deps
apt-get download libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 zlib1g-dev 2> /dev/null
# ../shared does not travel: the benchmark's tokenizer and pairs go along (DPO_SHARED_DIR).
mkdir -p shared/tokenizers shared/data
cp -r ../../shared/tokenizers/qwen3 shared/tokenizers/
cp -r ../../shared/data/hh-rlhf shared/data/
ls -la
