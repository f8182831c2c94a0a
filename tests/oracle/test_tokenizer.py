"""Exactness of dpo-tokenize against HF `tokenizers` (the reference), computed in the same run.

For llama3, qwen3 and mistral: every text of ../shared/tokenizers/vectors/<name>.jsonl and
every chosen and rejected text of HH-RLHF harmless-base test must encode to exactly HF's ids
(tolerance: none), with and without special tokens; decoding those ids must give exactly HF's
decode (with and without skip_special_tokens), hence decode(encode(x)) == x wherever HF
round-trips. All texts of one tokenizer go through one dpo-tokenize process.
"""
import gzip
import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from shared_data import SHARED_DIR as SHARED, needs_shared

TOKENIZERS = ["llama3", "qwen3", "mistral"]
BINARY = Path(os.environ.get("DPO_BINARY_DIR", "build")) / "bin" / "dpo-tokenize"

pytestmark = needs_shared(SHARED / "tokenizers")


def _texts(name):
    texts = [json.loads(l)["text"] for l in open(SHARED / "tokenizers/vectors" / f"{name}.jsonl")]
    with gzip.open(SHARED / "data/hh-rlhf/harmless-base-test.jsonl.gz", "rt") as f:
        for line in f:
            pair = json.loads(line)
            texts += [pair["chosen"], pair["rejected"]]
    return texts


def run_tokenize(tokenizer, lines, *flags):
    """dpo-tokenize with `tokenizer` (a directory or tokenizer.json) on JSON `lines` ({"text"} or
    {"ids"} with --decode): one output object per line."""
    proc = subprocess.run(
        [str(BINARY), "--tokenizer", str(tokenizer), *flags],
        input="".join(json.dumps(l) + "\n" for l in lines).encode(),
        capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    # split("\n"), not splitlines(): decoded text may hold raw U+2028 / U+0085.
    out = [json.loads(l) for l in proc.stdout.decode().split("\n")[:-1]]
    assert len(out) == len(lines)
    return out


def _run(name, lines, *flags):
    return run_tokenize(SHARED / "tokenizers" / name, lines, *flags)


@pytest.fixture(scope="module")
def hf():
    from tokenizers import Tokenizer
    return {n: Tokenizer.from_file(str(SHARED / "tokenizers" / n / "tokenizer.json"))
            for n in TOKENIZERS}


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("add_special", [False, True])
def test_encode_decode_match_hf(hf, name, add_special):
    ref = hf[name]
    texts = _texts(name)
    assert len(texts) >= 2 * 2312
    flags = ["--add-special-tokens"] if add_special else []
    ours = [o["ids"] for o in _run(name, [{"text": t} for t in texts], *flags)]
    want = [e.ids for e in ref.encode_batch(texts, add_special_tokens=add_special)]
    bad = [i for i in range(len(texts)) if ours[i] != want[i]]
    assert not bad, (f"{len(bad)}/{len(texts)} differ; first: {texts[bad[0]][:200]!r} "
                     f"ours={ours[bad[0]][:40]} hf={want[bad[0]][:40]}")

    for skip in (False, True):
        flags = ["--decode"] + (["--skip-special-tokens"] if skip else [])
        decoded = [o["text"] for o in _run(name, [{"ids": ids} for ids in want], *flags)]
        hf_decoded = ref.decode_batch(want, skip_special_tokens=skip)
        bad = [i for i in range(len(texts)) if decoded[i] != hf_decoded[i]]
        assert not bad, f"decode differs on {texts[bad[0]][:200]!r}"
        if not add_special and not skip:
            round_trips = sum(d == t for d, t in zip(decoded, texts))
            hf_round_trips = sum(d == t for d, t in zip(hf_decoded, texts))
            assert round_trips == hf_round_trips and round_trips > 0.9 * len(texts)


# Characters where regex engines, normalizers and added-token matching tend to disagree: case
# folding (Kelvin sign, long s, dotted I), White_Space edge cases (U+180E is not one, U+0085 is),
# combining marks (NFC), emoji sequences, SentencePiece's marker, special-token spellings.
_POOL = list("aAzZ09 \t\n\r'sStTmMlLdD.,!?-_()<>|/\\\"") + [
    "\u0301", "\u0323", "\u0307", "é", "ß", "İ", "ſ", "\u212a", "\u180e", "\u0085", "\u00a0",
    "\u2028", "\u3000", "\u2009", "東", "🤖", "👍🏽", "\u200d", "\ufeff", "\u2581", "Σ", "١", "²",
    "½", "\U0001d7d8", "\x00", "\ufffd", "한", "\u1100", "\u1161", "<s>", "</s>", "<|im_start|>",
    "<|endoftext|>", "<|begin_of_text|>", "<unk>", "<0x41>", "'S", "'LL", "  ", "\n\n", "   \n"]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_random_edge_case_strings_match_hf(hf, name):
    rng = random.Random(1234)
    texts = ["".join(rng.choice(_POOL) for _ in range(rng.randint(0, 40))) for _ in range(1500)]
    texts += [" " * 5000 + "x", "\n" * 3000, "a" * 5000, "1" * 1000 + "é" * 500]
    for add_special in (False, True):
        flags = ["--add-special-tokens"] if add_special else []
        ours = [o["ids"] for o in _run(name, [{"text": t} for t in texts], *flags)]
        want = [e.ids for e in hf[name].encode_batch(texts, add_special_tokens=add_special)]
        bad = [i for i in range(len(texts)) if ours[i] != want[i]]
        assert not bad, f"{len(bad)} differ; first {texts[bad[0]]!r}: {ours[bad[0]]} vs {want[bad[0]]}"
    decoded = [o["text"] for o in _run(name, [{"ids": ids} for ids in want], "--decode")]
    assert decoded == hf[name].decode_batch(want, skip_special_tokens=False)


def _added(d, *tokens):
    base = max(max(d["model"]["vocab"].values()), max(a["id"] for a in d["added_tokens"])) + 1
    for i, (content, single_word, lstrip, rstrip, normalized, special) in enumerate(tokens):
        d["added_tokens"].append(dict(id=base + i, content=content, single_word=single_word,
                                      lstrip=lstrip, rstrip=rstrip, normalized=normalized,
                                      special=special))


def _metaspace(scheme, split):
    def edit(d):
        d["normalizer"] = None
        d["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                              "prepend_scheme": scheme, "split": split}
        d["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": split},
            {"type": "ByteFallback"}, {"type": "Fuse"}]}
    return edit


# Variants of the real files for the styles they do not cover: Llama-2-style Metaspace
# pre-tokenizer and decoder, GPT-2-style ByteLevel regex with prefix space, NFKC + Lowercase,
# added tokens with single_word / lstrip / rstrip / normalized.
VARIANTS = {
    "metaspace_first_split": ("mistral", _metaspace("first", True)),
    "metaspace_always": ("mistral", _metaspace("always", False)),
    "metaspace_never": ("mistral", _metaspace("never", True)),
    "gpt2_bytelevel": ("qwen3", lambda d: d.update(normalizer=None, pre_tokenizer={
        "type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True})),
    "nfkc_lowercase": ("llama3", lambda d: d.update(normalizer={"type": "Sequence", "normalizers": [
        {"type": "NFKC"}, {"type": "Lowercase"}]})),
    "added_flags_sp": ("mistral", lambda d: _added(d, ("hello", True, True, True, True, False),
                                                   (" World", False, False, True, True, True))),
    "added_flags_bytelevel": ("llama3", lambda d: _added(
        d, (" World", False, False, True, True, True), ("hello", True, True, True, False, False))),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pipeline_variants_match_hf(tmp_path, variant):
    from tokenizers import Tokenizer
    base, edit = VARIANTS[variant]
    d = json.load(open(SHARED / "tokenizers" / base / "tokenizer.json"))
    edit(d)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(d))
    ref = Tokenizer.from_file(str(path))
    rng = random.Random(99)
    pool = _POOL + ["hello", "Hello", " World", "World", "ﬁ", "Ⅻ"]
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 30))) for _ in range(1200)]
    texts += _texts(base)[-300:]
    proc = subprocess.run([str(BINARY), "--tokenizer", str(path)],
                          input="".join(json.dumps({"text": t}) + "\n" for t in texts).encode(),
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    ours = [json.loads(l)["ids"] for l in proc.stdout.decode().split("\n")[:-1]]
    want = [e.ids for e in ref.encode_batch(texts, add_special_tokens=False)]
    bad = [i for i in range(len(texts)) if ours[i] != want[i]]
    assert not bad, f"{len(bad)} differ; first {texts[bad[0]]!r}: {ours[bad[0]]} vs {want[bad[0]]}"
    proc = subprocess.run([str(BINARY), "--tokenizer", str(path), "--decode"],
                          input="".join(json.dumps({"ids": x}) + "\n" for x in want).encode(),
                          capture_output=True, timeout=600)
    decoded = [json.loads(l)["text"] for l in proc.stdout.decode().split("\n")[:-1]]
    assert decoded == ref.decode_batch(want, skip_special_tokens=False)


def test_special_token_text_and_config_bos(hf):
    # Special tokens written in the text are matched as tokens, with or without add_special.
    text = "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>"
    ours = _run("qwen3", [{"text": text}])[0]["ids"]
    assert ours == hf["qwen3"].encode(text, add_special_tokens=False).ids
    assert ours[0] == hf["qwen3"].token_to_id("<|im_start|>")
    # mistral's config says add_bos_token: <s> first, only with --add-special-tokens.
    with_bos = _run("mistral", [{"text": "Hello"}], "--add-special-tokens")[0]["ids"]
    assert with_bos[0] == 1 and _run("mistral", [{"text": "Hello"}])[0]["ids"][0] != 1


def test_bad_input_names_line():
    proc = subprocess.run(
        [str(BINARY), "--tokenizer", str(SHARED / "tokenizers/qwen3")],
        input=b'{"text": "ok"}\n{"text": 5}\n', capture_output=True, timeout=120)
    assert proc.returncode != 0
    assert b"stdin:2" in proc.stderr
    assert proc.stdout.decode().count("\n") <= 1
    proc = subprocess.run(
        [str(BINARY), "--tokenizer", str(SHARED / "tokenizers/qwen3"), "--decode"],
        input=b'{"ids": [1, 2]}\nnot json\n', capture_output=True, timeout=120)
    assert proc.returncode != 0 and b"stdin:2" in proc.stderr
