"""Unicode beyond the machine's libraries: dpo-tokenize against HF `tokenizers` on every code point
of planes 0-3 and 14, computed in the same run; and the committed Unicode tables against their
generator.

HF's regex classes (\\p{L}, \\p{N}) follow Unicode 16.0 and its normalizers Unicode 9.0, while
Debian's PCRE2 knows 14.0 and utf8proc 15.0; our tables (common/tokenizer/unicode_tables.cc) carry
HF's versions. Each code point goes through the tokenizer alone, after a letter and before "'s"
(the contraction branch of the llama3/qwen3 patterns), between digits, and between combining marks
of classes 230 and 220 (NFC's reordering and composition). 64 code points share one text, so the
~325,000 code points make ~5,100 texts per tokenizer: llama3 and qwen3 (Split regex + byte-level
BPE; qwen3 with NFC), mistral (SentencePiece-style BPE, no regex), and qwen3 with NFKC in place
of NFC. Tolerance: none, every text's ids must equal HF's (for byte-level BPE equal ids mean equal
normalized bytes and equal pre-tokenized words).
"""
import json
import subprocess
import sys

import pytest

from shared_data import SHARED_DIR as SHARED, SOURCE_DIR, needs_shared
from test_tokenizer import run_tokenize

PLANES = [range(0, 0xD800), range(0xE000, 0x40000), range(0xE0000, 0xF0000)]
SEGMENTS = ["{c}'s a{c}\u0301 1{c}2\u0316{c}\u0301"]
PER_TEXT = 64
# name: (tokenizer directory, replacement normalizer or None to keep the file's)
CASES = {
    "llama3": ("llama3", None),
    "qwen3": ("qwen3", None),
    "mistral": ("mistral", None),
    "qwen3_nfkc": ("qwen3", {"type": "NFKC"}),
}


def _chunks():
    cps = [c for r in PLANES for c in r]
    return [cps[i:i + PER_TEXT] for i in range(0, len(cps), PER_TEXT)]


def _text(cps):
    return "\n".join(seg.format(c=chr(c)) for c in cps for seg in SEGMENTS)


def _ours(path, texts):
    return [o["ids"] for o in run_tokenize(path, [{"text": t} for t in texts])]


@needs_shared(SHARED / "tokenizers")
@pytest.mark.parametrize("case", CASES)
def test_every_code_point_tokenizes_as_hf(case, tmp_path):
    from tokenizers import Tokenizer
    directory, normalizer = CASES[case]
    path = SHARED / "tokenizers" / directory / "tokenizer.json"
    if normalizer is not None:
        spec = json.loads(path.read_text())
        spec["normalizer"] = normalizer
        path = tmp_path / "tokenizer.json"
        path.write_text(json.dumps(spec))
    hf = Tokenizer.from_file(str(path))
    chunks = _chunks()
    texts = [_text(c) for c in chunks]
    want = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    got = _ours(path, texts)
    bad = [i for i in range(len(texts)) if got[i] != want[i]]
    if bad:
        # Name the code points: each one of the first differing texts, on its own.
        cps = [c for i in bad[:4] for c in chunks[i]]
        alone = [_text([c]) for c in cps]
        want1 = [e.ids for e in hf.encode_batch(alone, add_special_tokens=False)]
        got1 = _ours(path, alone)
        culprits = [f"U+{c:04X} ours={g} hf={w}" for c, g, w in zip(cps, got1, want1) if g != w]
        pytest.fail(f"{len(bad)}/{len(texts)} texts differ; " + "; ".join(culprits[:8]))


def test_committed_tables_are_what_the_generator_writes(tmp_path):
    # unicodedataplus is pinned in scripts/requirements.txt: without it this test fails.
    out = tmp_path / "unicode_tables.cc"
    subprocess.run([sys.executable, str(SOURCE_DIR / "scripts" / "gen_unicode_tables.py"),
                    "--output", str(out)], check=True, timeout=300)
    committed = SOURCE_DIR / "common" / "tokenizer" / "unicode_tables.cc"
    assert out.read_text() == committed.read_text(), (
        "common/tokenizer/unicode_tables.cc is stale: run scripts/gen_unicode_tables.py")
