"""Oracle: our prepared pairs (dpo-prepare) equal TRL 1.16's DPOTrainer preprocessing.

TRL's own code is the reference: DPOTrainer._prepare_dataset (prompt extraction, EOS, tokenization
with the prompt/completion split at the common token prefix, the keep_start filter) run on the
same rows with the real tokenizers. Exact equality of token ids (tolerance: none). Our prepared
file stores completions already cut to max_length - len(prompt) under keep_start, which is what
TRL's collator keeps, so TRL's completions are cut the same way before comparing.

Text: a sample of HH-RLHF pairs in explicit form (prompt from TRL's extract_prompt), qwen3,
llama3 and mistral, with max_length 1024 and a small max_length that drops pairs. Conversational: a few
conversations rendered by our native chat templates vs transformers' apply_chat_template with
the real tokenizer_config.json templates (qwen3, llama3) and the Mistral/ChatML/Llama-3-Instruct
template strings set on the tokenizer. Skipped when ../shared is absent (an error in CI). The demo tokenizer
and data (examples/) are checked the same way, always.
"""
import gzip
import json
import os
import struct
import subprocess
import types
from pathlib import Path

import pytest

from shared_data import HH_RLHF as HH, SHARED_DIR as SHARED, needs_shared as _needs_shared

TOKENIZERS = SHARED / "tokenizers"
needs_shared = _needs_shared(HH)
EXAMPLES = Path(os.environ.get("DPO_SOURCE_DIR", ".")) / "examples"

BINARY_DIR = Path(os.environ.get("DPO_BINARY_DIR", "build"))
PREPARE = BINARY_DIR / "bin" / "dpo-prepare"
SAMPLE = 48  # HH pairs per tokenizer: enough to include over-long ones, quick on 2 cores

MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_INSTRUCT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def read_prepared(path):
    data = Path(path).read_bytes()
    fields = struct.unpack_from("<8sII3Q2Q4Q", data, 0)
    magic, version = fields[0], fields[1]
    assert magic == b"DPOPREP\0" and version == 2
    num_pairs, num_tokens = fields[6], fields[7]
    json_offset, json_bytes, pairs_offset, tokens_offset = fields[8:12]
    meta = json.loads(data[json_offset:json_offset + json_bytes])
    tokens = struct.unpack_from(f"<{num_tokens}i", data, tokens_offset)
    pairs = []
    for i in range(num_pairs):
        offset, p, c, r, _line = struct.unpack_from("<QIIII", data, pairs_offset + 24 * i)
        pairs.append((list(tokens[offset:offset + p]), list(tokens[offset + p:offset + p + c]),
                      list(tokens[offset + p + c:offset + p + c + r])))
    return meta, pairs


@pytest.fixture(scope="module")
def trl():
    if not PREPARE.exists():
        pytest.fail(f"{PREPARE} not built")
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig
    from trl.data_utils import extract_prompt
    from trl.trainer.dpo_trainer import DPOTrainer

    def reference(tokenizer, rows, max_length):
        args = DPOConfig(output_dir="/tmp/dpo-oracle-unused", max_length=max_length, report_to=[],
                         use_cpu=True, bf16=False, dataset_num_proc=None)
        owner = types.SimpleNamespace(_tokenizer=tokenizer, _is_vision_dataset=False)
        out = DPOTrainer._prepare_dataset(owner, Dataset.from_list(rows), tokenizer, args, "oracle")
        pairs = []
        for ex in out:
            room = max_length - len(ex["prompt_ids"])
            pairs.append((ex["prompt_ids"], ex["chosen_ids"][:room], ex["rejected_ids"][:room]))
        return pairs

    return types.SimpleNamespace(reference=reference, extract_prompt=extract_prompt,
                                 AutoTokenizer=AutoTokenizer)


def run_prepare(tmp_path, name, rows, tokenizer_dir, max_length, *extra):
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / f"{name}.bin"
    subprocess.run([str(PREPARE), "--tokenizer", str(tokenizer_dir), "--data", str(data), "--out", str(out),
                    "--max-length", str(max_length), "--threads", "2", *extra], check=True,
                   capture_output=True, text=True)
    return read_prepared(out)


def hh_rows(extract_prompt, count=SAMPLE):
    rows = []
    with gzip.open(HH, "rt") as f:
        for line in f:
            rows.append(extract_prompt(json.loads(line)))
            if len(rows) == count:
                break
    return rows


@needs_shared
@pytest.mark.parametrize("family", ["qwen3", "llama3", "mistral"])
@pytest.mark.parametrize("max_length", [1024, 96])
def test_hh_text_pairs_equal_trl(trl, tmp_path, family, max_length):
    tokenizer = trl.AutoTokenizer.from_pretrained(str(TOKENIZERS / family))
    rows = hh_rows(trl.extract_prompt)
    expected = trl.reference(tokenizer, rows, max_length)
    meta, ours = run_prepare(tmp_path, family, rows, TOKENIZERS / family, max_length)
    assert meta["report"]["dropped"] == len(rows) - len(expected)
    if max_length == 96:
        assert meta["report"]["dropped"] > 0  # the small limit must exercise the drop rule
    # BOS starts the prompt exactly when the tokenizer adds one (Mistral: add_bos_token).
    assert all((p[0] == tokenizer.bos_token_id) == (family == "mistral") for p, _, _ in ours)
    assert len(ours) == len(expected)
    for i, (a, b) in enumerate(zip(ours, expected)):
        assert a == b, f"pair {i} differs ({family}, max_length {max_length})"


CONVERSATIONS = [
    {"prompt": [{"role": "user", "content": "What color is the sky?"}],
     "chosen": [{"role": "assistant", "content": "It is blue."}],
     "rejected": [{"role": "assistant", "content": "It is green."}]},
    {"prompt": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello, how can I help?"},
                {"role": "user", "content": "  Name a prime number.\n"}],
     "chosen": [{"role": "assistant", "content": "7 is prime."}],
     "rejected": [{"role": "assistant", "content": "<think>\nhmm\n</think>\n\n8, I think"}]},
    {"prompt": [{"role": "user", "content": "Ünïcödé? 日本語で答えて"}],
     "chosen": [{"role": "assistant", "content": "はい、できます。"}],
     "rejected": [{"role": "assistant", "content": "No."}]},
]
WITH_SYSTEM = [
    {"chosen": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}],
     "rejected": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "Four, because two and two make four."}]},
]


@needs_shared
@pytest.mark.parametrize("family,template,name", [
    ("qwen3", None, None),                          # tokenizer_config.json's template, detected
    ("qwen3", CHATML_TEMPLATE, "chatml"),
    ("llama3", None, None),                         # the base template (always a generation prompt)
    ("llama3", LLAMA3_INSTRUCT_TEMPLATE, "llama3"),
    ("mistral", MISTRAL_TEMPLATE, "mistral"),
])
def test_conversations_equal_trl(trl, tmp_path, family, template, name):
    tokenizer = trl.AutoTokenizer.from_pretrained(str(TOKENIZERS / family))
    if template is not None:
        tokenizer.chat_template = template
    rows = CONVERSATIONS + ([] if family == "mistral" else WITH_SYSTEM)
    extra = ["--chat-template", name] if name else []
    max_length = 1024
    # Explicit and implicit conversational forms separately (a dataset has one form).
    for form, subset in (("explicit", CONVERSATIONS), ("implicit", [r for r in rows if "prompt" not in r])):
        if not subset:
            continue
        expected = trl.reference(tokenizer, subset, max_length)
        _, ours = run_prepare(tmp_path, f"{family}-{form}", subset, TOKENIZERS / family, max_length, *extra)
        assert len(ours) == len(expected)
        for i, (a, b) in enumerate(zip(ours, expected)):
            assert a == b, f"{family}/{name} {form} conversation {i}: {tokenizer.decode(a[0] + a[1])!r} vs " \
                           f"{tokenizer.decode(b[0] + b[1])!r}"


def test_demo_tokenizer_and_data_equal_trl(trl, tmp_path):
    """The shipped demo pair (implicit HH form, BOS from the post-processor) as TRL sees it."""
    tokenizer = trl.AutoTokenizer.from_pretrained(str(EXAMPLES / "tokenizer"))
    lines = (EXAMPLES / "data/hh_rlhf_sample.jsonl").read_text().splitlines()
    assert len(lines) == 128
    rows = [trl.extract_prompt(json.loads(line)) for line in lines]
    expected = trl.reference(tokenizer, rows, 256)
    meta, ours = run_prepare(tmp_path, "demo", rows, EXAMPLES / "tokenizer", 256)
    assert meta["report"]["dropped"] == len(rows) - len(expected)
    assert all(p[0] == tokenizer.bos_token_id for p, _, _ in ours)
    assert ours == expected


@needs_shared
def test_implicit_prompt_common_prefix_is_trls_extract_prompt(trl, tmp_path):
    """data.implicit_prompt: common_prefix on raw HH-RLHF {chosen, rejected} rows gives the ids
    TRL's own pipeline gives (its maybe_extract_prompt -> extract_prompt, then tokenization), for
    every pair of a 400-pair sample; the default assistant_turn differs only on pairs where TRL's
    prompt runs past the last shared "\\n\\nAssistant:" (the replies start alike)."""
    tokenizer = trl.AutoTokenizer.from_pretrained(str(TOKENIZERS / "qwen3"))
    rows = hh_rows(lambda row: {"chosen": row["chosen"], "rejected": row["rejected"]}, count=400)
    no_limit = 1_000_000  # no pair dropped or cut: both rules keep every pair, in line order
    expected = trl.reference(tokenizer, rows, no_limit)
    _, ours = run_prepare(tmp_path, "trl-rule", rows, TOKENIZERS / "qwen3", 0,
                          "--implicit-prompt", "common_prefix")
    assert len(ours) == len(expected) == len(rows)
    for i, (a, b) in enumerate(zip(ours, expected)):
        assert a == b, f"line {i + 1}: prompt {tokenizer.decode(a[0][-8:])!r} vs TRL {tokenizer.decode(b[0][-8:])!r}"

    _, turns = run_prepare(tmp_path, "turn-rule", rows, TOKENIZERS / "qwen3", 0)
    trl_prompts = [trl.extract_prompt(row)["prompt"] for row in rows]
    past_the_turn = [i for i, prompt in enumerate(trl_prompts) if not prompt.endswith("\n\nAssistant:")]
    assert past_the_turn, "the sample must hold pairs whose replies start alike"
    differ = [i for i, (a, b) in enumerate(zip(turns, expected)) if a != b]
    # A TRL prompt that ends inside a token merging with the completion ("Assistant: I" + "t")
    # loses that end again to TRL's token-level split, so not every string difference remains.
    assert differ and set(differ) <= set(past_the_turn)
    print(f"{len(past_the_turn)} of {len(rows)} pairs split differently, {len(differ)} in token ids")
