#!/usr/bin/env bash
# Run HERE (Debian 12) before a GPU session: downloads the Debian packages of the libraries the
# engine needs and the GPU machine lacks (PCRE2 and utf8proc headers/libraries, zlib headers)
# into .gpu-deps/, which git ignores. Name .gpu-deps in the device run's `carry`;
# run_gpu_checks.sh unpacks them into a private sysroot there (never into /).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu-deps
cd .gpu-deps
apt-get download libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 zlib1g-dev 2> /dev/null
ls -la
