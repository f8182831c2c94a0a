"""Single-thread encode throughput of dpo-tokenize vs HF `tokenizers`, same run, same texts.

Texts: every chosen and rejected text of HH-RLHF harmless-base test (2312 pairs). For each of
llama3, qwen3, mistral: first checks our ids equal HF's on every text (no timing otherwise),
then times HF `Tokenizer.encode` in a Python loop (TOKENIZERS_PARALLELISM=false,
RAYON_NUM_THREADS=1) and `dpo-tokenize --bench` (one thread, in-process timer, JSON parsing
excluded on both sides). MB = 1e6 bytes of UTF-8 input. Each figure is the best of --repeats.

  .venv/bin/python bench/tokenizer_bench.py [--build build-tok] [--seconds 3] [--repeats 3]
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
from tokenizers import Tokenizer  # noqa: E402  (after the env vars it reads)

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DPO_SHARED_DIR", ROOT.parent / "shared"))


def texts():
    out = []
    with gzip.open(SHARED / "data/hh-rlhf/harmless-base-test.jsonl.gz", "rt") as f:
        for line in f:
            pair = json.loads(line)
            out += [pair["chosen"], pair["rejected"]]
    return out


def ours(binary, path, lines, *flags):
    proc = subprocess.run([str(binary), "--tokenizer", str(path), *flags], input=lines.encode(),
                          capture_output=True, check=True)
    return proc.stdout.decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build-tok"))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    binary = Path(args.build) / "bin" / "dpo-tokenize"
    ts = texts()
    nbytes = sum(len(t.encode()) for t in ts)
    lines = "".join(json.dumps({"text": t}) + "\n" for t in ts)
    print(f"{len(ts)} texts, {nbytes / 1e6:.2f} MB; single thread")
    print(f"{'tokenizer':10} {'HF MB/s':>9} {'ours MB/s':>10} {'ratio':>6}")
    for name in ["llama3", "qwen3", "mistral"]:
        path = SHARED / "tokenizers" / name
        hf = Tokenizer.from_file(str(path / "tokenizer.json"))
        want = [hf.encode(t, add_special_tokens=False).ids for t in ts]
        got = [json.loads(l)["ids"] for l in ours(binary, path, lines).splitlines()]
        if got != want:
            sys.exit(f"{name}: ids differ from HF; not timing")
        hf_best = 0.0
        for _ in range(args.repeats):
            start = time.perf_counter()
            for t in ts:
                hf.encode(t, add_special_tokens=False)
            hf_best = max(hf_best, nbytes / (time.perf_counter() - start) / 1e6)
        our_best = 0.0
        for _ in range(args.repeats):
            r = json.loads(ours(binary, path, lines, "--bench", str(args.seconds)))
            our_best = max(our_best, r["mb_per_s"])
        print(f"{name:10} {hf_best:9.2f} {our_best:10.2f} {our_best / hf_best:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
