"""dpo-eval against transformers: the per-pair sequence log-probs of a policy and a reference
(two tiny random Llamas, or Mistrals with a sliding window shorter than the pairs) must equal those computed with transformers' forward in the same run,
within 1e-4 relative; rewards, accuracy and margin follow from them exactly."""
import json
import shutil
import subprocess

import pytest
import torch

from trl_runs import BINARY_DIR, EXAMPLE_TOKENIZER, SOURCE_DIR, RunConfig, explicit_pairs, make_tiny_llama, write_jsonl

BETA = 0.25


def hf_logps(model, tokenizer, pair):
    prompt = tokenizer(pair["prompt"])["input_ids"]
    out = []
    for side in ("chosen", "rejected"):
        ids = tokenizer(pair["prompt"] + pair[side] + tokenizer.eos_token)["input_ids"]
        start = 0
        while start < min(len(prompt), len(ids)) and prompt[start] == ids[start]:
            start += 1
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logp = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        out.append(float(logp[start - 1:].sum()))
    return out


def make_tiny_mistral(directory, seed, vocab_size, sliding_window):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=2048, sliding_window=sliding_window)
    MistralForCausalLM(config).save_pretrained(directory)
    return directory


MODELS = {
    "llama": lambda directory, seed, vocab: make_tiny_llama(directory, RunConfig(seed=seed), vocab),
    # A window far shorter than the pairs, and than the packed row of 8 pairs dpo-eval builds
    # (which "exceeds sliding_window" refused before the window was applied per sequence).
    "mistral_window16": lambda directory, seed, vocab: make_tiny_mistral(directory, seed, vocab, 16),
}


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_dpo_eval_matches_transformers(arch, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(EXAMPLE_TOKENIZER)
    dirs = {}
    for name, seed in (("policy", 1), ("reference", 2)):
        dirs[name] = MODELS[arch](tmp_path / name, seed, len(tokenizer))
        for f in EXAMPLE_TOKENIZER.iterdir():
            shutil.copy(f, dirs[name])
    pairs = explicit_pairs(12, SOURCE_DIR / "examples" / "data" / "hh_rlhf_sample.jsonl")
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "scores.jsonl"
    proc = subprocess.run([str(BINARY_DIR / "bin" / "dpo-eval"), "--policy", str(dirs["policy"]),
                           "--reference", str(dirs["reference"]), "--data", str(data),
                           "--beta", str(BETA), "--max-length", "0", "--batch-size", "8",
                           "--output", str(out), "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == len(pairs) == summary["pairs"]

    models = {n: AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
              for n, d in dirs.items()}
    accurate, margins = 0, []
    for pair, row in zip(pairs, rows):
        pc, pr = hf_logps(models["policy"], tokenizer, pair)
        rc, rr = hf_logps(models["reference"], tokenizer, pair)
        for ours, ref in ((row["policy_chosen_logps"], pc), (row["policy_rejected_logps"], pr),
                          (row["reference_chosen_logps"], rc), (row["reference_rejected_logps"], rr)):
            assert ours == pytest.approx(ref, rel=1e-4)
        assert row["reward_chosen"] == pytest.approx(BETA * (row["policy_chosen_logps"] - row["reference_chosen_logps"]))
        assert row["reward_rejected"] == pytest.approx(BETA * (row["policy_rejected_logps"] - row["reference_rejected_logps"]))
        accurate += row["reward_chosen"] > row["reward_rejected"]
        margins.append(row["reward_chosen"] - row["reward_rejected"])
    assert summary["accuracy"] == pytest.approx(accurate / len(rows))
    assert summary["mean_margin"] == pytest.approx(sum(margins) / len(margins))


def test_dpo_eval_reports_bad_data_with_file_and_line(tmp_path):
    from transformers import AutoTokenizer

    # A real model directory: dpo-eval checks the model's vocabulary against the tokenizer
    # before it reads the data.
    policy = make_tiny_llama(tmp_path / "policy", RunConfig(), len(AutoTokenizer.from_pretrained(EXAMPLE_TOKENIZER)))
    for f in EXAMPLE_TOKENIZER.iterdir():
        shutil.copy(f, policy)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": \n')
    proc = subprocess.run([str(BINARY_DIR / "bin" / "dpo-eval"), "--policy", str(policy),
                           "--data", str(bad), "--output", str(tmp_path / "o.jsonl")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"{bad}:2" in proc.stderr


def test_rows_name_the_input_line_when_pairs_are_dropped(tmp_path):
    # Lines 2 and 5 hold prompts too long for --max-length (dropped, as TRL drops them), line 4
    # is blank. Each row's "line" must be the line its pair came from ("index" counts the kept
    # pairs), checked by scoring that line's pair with transformers.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(EXAMPLE_TOKENIZER)
    policy = make_tiny_llama(tmp_path / "policy", RunConfig(seed=3), len(tokenizer))
    for f in EXAMPLE_TOKENIZER.iterdir():
        shutil.copy(f, policy)
    max_length = 256
    short = explicit_pairs(4, SOURCE_DIR / "examples" / "data" / "hh_rlhf_sample.jsonl",
                           keep=lambda p: max(len(tokenizer(p["prompt"] + p[s])["input_ids"])
                                              for s in ("chosen", "rejected")) < max_length - 1)
    long = {"prompt": "Human: " + "why " * 400 + "\n\nAssistant:", "chosen": " yes", "rejected": " no"}
    lines = [short[0], long, short[1], None, long, short[2], short[3]]
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join((json.dumps(p) if p else "") + "\n" for p in lines))
    out = tmp_path / "scores.jsonl"
    proc = subprocess.run([str(BINARY_DIR / "bin" / "dpo-eval"), "--policy", str(policy), "--data", str(data),
                           "--max-length", str(max_length), "--output", str(out), "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["dropped_pairs"] == 2
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert [r["line"] for r in rows] == [1, 3, 6, 7]
    model = AutoModelForCausalLM.from_pretrained(policy, torch_dtype=torch.float32).eval()
    for row in rows:
        chosen, rejected = hf_logps(model, tokenizer, lines[row["line"] - 1])
        assert row["policy_chosen_logps"] == pytest.approx(chosen, rel=1e-4)
        assert row["policy_rejected_logps"] == pytest.approx(rejected, rel=1e-4)
