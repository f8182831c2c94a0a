"""The command lines of the tools: dpo-tokenize, dpo-prepare, dpo-model-check, dpo-loss-check and
bench/prepare_bench (docs/cli.md). Strict numbers, flags in any position, generated --help, the
exit statuses."""
from __future__ import annotations

import json

import pytest

from cli_cases import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Case, check_case, check_help_lists, run_case

TOKENIZE = "bin/dpo-tokenize"
PREPARE = "bin/dpo-prepare"
MODEL_CHECK = "bin/dpo-model-check"
LOSS_CHECK = "bin/dpo-loss-check"
PREPARE_BENCH = "bench/prepare_bench"
TOKENIZER = "{examples}/tokenizer"
DATA = "{examples}/data/hh_rlhf_sample.jsonl"
CONFIG = "{examples}/tiny-llama/config.json"
# One pair's DPO loss with precomputed reference sums (common/loss/dpo_loss_check.cc).
LOSS_INPUT = json.dumps({
    "mode": "loss", "options": {"beta": 0.1},
    "policy": {"token_logps": {"shape": [2, 2], "data": [-1, -2, -3, -4]},
               "completion_mask": {"shape": [2, 3], "data": [0, 1, 1, 0, 1, 1]}},
    "reference": {"chosen": {"shape": [1], "data": [-3]}, "rejected": {"shape": [1], "data": [-7]}},
}).replace("{", "{{").replace("}", "}}")  # Case.files are format strings

TOKENIZE_FAILS = "the tokenizer cannot be loaded, or a bad input line (stdin:N)"
PREPARE_FAILS = "the tokenizer or the data cannot be read, or the data has a bad line (file:line)"
MODEL_CHECK_FAILS = "the command failed: a model or input cannot be read, or a precision row is out of tolerance"
LOSS_CHECK_FAILS = "IN.json cannot be read, or holds a bad mode, tensor or option"
PREPARE_BENCH_FAILS = "the data or the tokenizer cannot be read, or the outputs of 1 and N threads differ"

CASES = [
    Case(TOKENIZE, ("--tokenizer", TOKENIZER), EXIT_OK, stdin='{"text": "hello world"}\n',
         stdout_has='{"ids":[', when="every line is encoded (or decoded)"),
    Case(TOKENIZE, ("--tokenizer", TOKENIZER, "--bench", "0.01"), EXIT_OK, stdin='{"text": "hello"}\n',
         stdout_has='"mb_per_s"', when="every line is encoded (or decoded)"),
    Case(TOKENIZE, ("--tokenizer", "{tmp}/missing"), EXIT_FAILURE, stderr_has="missing: cannot open",
         when=TOKENIZE_FAILS),
    Case(TOKENIZE, ("--tokenizer", TOKENIZER), EXIT_FAILURE, stdin='{"text": "ok"}\n{"text": 5}\n',
         stderr_has="stdin:2", when=TOKENIZE_FAILS),
    Case(TOKENIZE, (), EXIT_USAGE, stderr_has="--tokenizer is required", when="usage"),
    Case(TOKENIZE, ("--tokenizer", TOKENIZER, "--frob"), EXIT_USAGE, stderr_has="not expected: --frob",
         when="usage"),
    Case(TOKENIZE, ("--tokenizer", TOKENIZER, "--bench", "2x"), EXIT_USAGE,
         stderr_has='--bench: expected a number > 0, got "2x"', when="usage"),
    Case(PREPARE, ("--tokenizer", TOKENIZER, "--data", DATA, "--out", "{tmp}/data.bin"), EXIT_OK,
         stdout_has="data.bin: prepared", when="the data set is prepared (or already was)"),
    Case(PREPARE, ("--tokenizer", TOKENIZER, "--data", "{tmp}/missing.jsonl", "--out", "{tmp}/data.bin"),
         EXIT_FAILURE, stderr_has="missing.jsonl: cannot open", when=PREPARE_FAILS),
    Case(PREPARE, ("--tokenizer", TOKENIZER, "--data", "{tmp}/bad.jsonl", "--out", "{tmp}/data.bin"),
         EXIT_FAILURE, files={"bad.jsonl": "not json\n"}, stderr_has="bad.jsonl:1", when=PREPARE_FAILS),
    Case(PREPARE, ("--data", DATA, "--out", "{tmp}/data.bin"), EXIT_USAGE, stderr_has="--tokenizer is required",
         when="usage"),
    Case(PREPARE, ("--tokenizer", TOKENIZER, "--data", DATA, "--out", "x", "--max-length", "2x"), EXIT_USAGE,
         stderr_has='--max-length: expected an integer >= 0, got "2x"', when="usage"),
    Case(PREPARE, ("--tokenizer", TOKENIZER, "--data", DATA, "--out", "x", "--threads", "-1"), EXIT_USAGE,
         stderr_has="--threads: expected an integer >= 0", when="usage"),
    Case(PREPARE, ("--tokenizer", TOKENIZER, "--data", DATA, "--out", "x", "--truncation-mode", "middle"),
         EXIT_USAGE, stderr_has="--truncation-mode: middle not in", when="usage"),
    Case(PREPARE, ("--tokenizer", TOKENIZER, "--data", DATA, "--out", "x", "--slots"), EXIT_USAGE,
         stderr_has="not expected: --slots", when="usage"),
    Case(MODEL_CHECK, ("init", "--config", CONFIG, "--seed", "1", "--out", "{tmp}/model"), EXIT_OK,
         when="the command's outputs are written (precision: every row within tolerance)"),
    Case(MODEL_CHECK, ("save", "--model", "{tmp}/missing", "--out", "{tmp}/model"), EXIT_FAILURE,
         stderr_has="missing/config.json: cannot open", when=MODEL_CHECK_FAILS),
    Case(MODEL_CHECK, (), EXIT_USAGE, stderr_has="A subcommand is required", when="usage"),
    Case(MODEL_CHECK, ("frob",), EXIT_USAGE, stderr_has="A subcommand is required", when="usage"),
    Case(MODEL_CHECK, ("init", "--config", CONFIG, "--seed", "2x", "--out", "{tmp}/model"), EXIT_USAGE,
         stderr_has='--seed: expected an integer >= 0, got "2x"', when="usage"),
    Case(MODEL_CHECK, ("save", "--model", "m", "--out", "o", "--max-shard-bytes", "0"), EXIT_USAGE,
         stderr_has="--max-shard-bytes: expected an integer >= 1", when="usage"),
    Case(MODEL_CHECK, ("init", "--seed", "1", "--out", "{tmp}/model"), EXIT_USAGE,
         stderr_has="--config is required", when="usage"),
    Case(MODEL_CHECK, ("logits", "--model", "m", "--ids", "i", "--out", "o", "--dtype", "float64"), EXIT_USAGE,
         stderr_has="--dtype: float64 not in", when="usage"),
    Case(MODEL_CHECK, ("precision", "--seed", "1"), EXIT_USAGE, stderr_has="not expected: 1 --seed",
         when="usage"),
    Case(LOSS_CHECK, ("{tmp}/in.json", "{tmp}/out.json"), EXIT_OK, files={"in.json": LOSS_INPUT},
         when="OUT.json is written"),
    Case(LOSS_CHECK, ("{tmp}/missing.json", "{tmp}/out.json"), EXIT_FAILURE, stderr_has="missing.json: cannot open",
         when=LOSS_CHECK_FAILS),
    Case(LOSS_CHECK, ("{tmp}/in.json", "{tmp}/out.json"), EXIT_FAILURE, files={"in.json": '{{"mode": "x"}}'},
         stderr_has='in.json: mode: expected "logps", "loss" or "pipeline", got "x"', when=LOSS_CHECK_FAILS),
    Case(LOSS_CHECK, ("{tmp}/in.json",), EXIT_USAGE, stderr_has="OUT.json is required", when="usage"),
    Case(LOSS_CHECK, ("a.json", "b.json", "c.json"), EXIT_USAGE, stderr_has="not expected: c.json", when="usage"),
    Case(LOSS_CHECK, ("--mode", "loss", "a.json", "b.json"), EXIT_USAGE, stderr_has="--mode", when="usage"),
    Case(PREPARE_BENCH, ("--tokenizer", TOKENIZER, "--data", DATA, "--batch-size", "4"), EXIT_OK,
         stdout_has="padded batches of 4 pairs", when="the measurements are printed"),
    Case(PREPARE_BENCH, ("--tokenizer", TOKENIZER, "--data", "{tmp}/missing.jsonl"), EXIT_FAILURE,
         stderr_has="missing.jsonl: cannot open", when=PREPARE_BENCH_FAILS),
    Case(PREPARE_BENCH, ("--batch-size", "2x"), EXIT_USAGE, stderr_has='--batch-size: expected an integer >= 1',
         when="usage"),
    Case(PREPARE_BENCH, ("--max-length", "1e3"), EXIT_USAGE, stderr_has='--max-length: expected an integer >= 0',
         when="usage"),
    Case(PREPARE_BENCH, ("--threads", "2"), EXIT_USAGE, stderr_has="not expected", when="usage"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}-{c.exit}-{'-'.join(c.args)[:40]}")
def test_case(case: Case, tmp_path):
    check_case(case, tmp_path)


def test_tokenize_help(tmp_path):
    check_help_lists(TOKENIZE, ["--tokenizer", "--add-special-tokens", "--decode", "--skip-special-tokens",
                                "--bench"], tmp_path)


def test_prepare_help(tmp_path):
    check_help_lists(PREPARE, ["--tokenizer", "--data", "--out", "--max-length", "--max-prompt-length",
                               "--max-completion-length", "--truncation-mode", "--chat-template", "--on-error",
                               "--implicit-prompt", "--threads", "--max-line-bytes", "--batch-size", "--seed"],
                      tmp_path)


@pytest.mark.parametrize("command,flags", [
    ("logits", ["--model", "--ids", "--out", "--dtype", "--checkpointing", "--span-attention"]),
    ("grads", ["--model", "--ids", "--out", "--checkpointing", "--span-attention"]),
    ("save", ["--model", "--out", "--dtype", "--max-shard-bytes"]),
    ("init", ["--config", "--seed", "--out", "--dtype", "--max-shard-bytes"]),
    ("precision", ["--device"]),
])
def test_model_check_help(command, flags, tmp_path):
    check_help_lists(MODEL_CHECK, [command], tmp_path)
    check_help_lists(MODEL_CHECK, flags, tmp_path, command=(command,))


def test_loss_check_help(tmp_path):
    check_help_lists(LOSS_CHECK, ["IN.json", "OUT.json"], tmp_path)


def test_prepare_bench_help(tmp_path):
    check_help_lists(PREPARE_BENCH, ["--tokenizer", "--data", "--max-length", "--batch-size"], tmp_path)


def test_tokenize_flags_in_any_order_and_spelling(tmp_path):
    """--flag=value and flags before or after one another mean the same as the usual order."""
    text = '{"text": "Hello there"}\n'
    usual = run_case(Case(TOKENIZE, ("--tokenizer", TOKENIZER, "--add-special-tokens"), EXIT_OK, stdin=text),
                     tmp_path)
    reordered = run_case(Case(TOKENIZE, ("--add-special-tokens", f"--tokenizer={TOKENIZER}"), EXIT_OK,
                              stdin=text), tmp_path)
    assert usual.returncode == reordered.returncode == EXIT_OK, reordered.stderr
    assert reordered.stdout == usual.stdout
    ids = json.loads(usual.stdout)["ids"]
    back = run_case(Case(TOKENIZE, ("--skip-special-tokens", "--decode", f"--tokenizer={TOKENIZER}"), EXIT_OK,
                         stdin=json.dumps({"ids": ids}) + "\n"), tmp_path)
    assert back.returncode == EXIT_OK, back.stderr
    assert json.loads(back.stdout)["text"] == "Hello there"
    bench = run_case(Case(TOKENIZE, ("--bench=0.01", f"--tokenizer={TOKENIZER}"), EXIT_OK, stdin=text), tmp_path)
    assert bench.returncode == EXIT_OK, bench.stderr
    assert json.loads(bench.stdout)["seconds"] >= 0.01


def test_prepare_flags_in_any_order_and_spelling(tmp_path):
    args = ("--max-length=64", "--seed", "1", f"--out={tmp_path}/a.bin", "--batch-size=4", "--data", DATA, "--seed=7",
            f"--tokenizer={TOKENIZER}")
    result = run_case(Case(PREPARE, args, EXIT_OK), tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    assert "a.bin: prepared" in result.stdout and "padding fraction (batch 4)" in result.stdout
    again = run_case(Case(PREPARE, args, EXIT_OK), tmp_path)
    assert "a.bin: up to date (reused)" in again.stdout, again.stdout


def test_model_check_flags_in_any_order_and_spelling(tmp_path):
    """The same seed gives the same weights whatever the flags' order and spelling (a repeated flag
    takes its last value, as the hand-written parsing did); save's --max-shard-bytes=N shards."""
    usual = run_case(Case(MODEL_CHECK, ("init", "--config", CONFIG, "--seed", "3", "--out", "{tmp}/a"), EXIT_OK),
                     tmp_path)
    reordered = run_case(Case(MODEL_CHECK, ("init", "--out={tmp}/b", "--seed=1", "--seed=3", f"--config={CONFIG}"),
                              EXIT_OK), tmp_path)
    assert usual.returncode == reordered.returncode == EXIT_OK, reordered.stderr
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    saved = run_case(Case(MODEL_CHECK, ("save", "--max-shard-bytes=50000", "--out={tmp}/c", "--model", "{tmp}/a"),
                          EXIT_OK), tmp_path)
    assert saved.returncode == EXIT_OK, saved.stderr
    assert (tmp_path / "c" / "model.safetensors.index.json").exists()


def test_loss_check_positionals_after_a_double_dash(tmp_path):
    (tmp_path / "in.json").write_text(LOSS_INPUT.format())
    result = run_case(Case(LOSS_CHECK, ("--", "{tmp}/in.json", "{tmp}/out.json"), EXIT_OK), tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["loss"]["data"] == [pytest.approx(0.6931472)]  # equal rewards: log 2


def test_prepare_bench_flags_in_any_order_and_spelling(tmp_path):
    args = ("--batch-size=2", f"--data={DATA}", "--max-length=64", "--tokenizer", TOKENIZER)
    result = run_case(Case(PREPARE_BENCH, args, EXIT_OK), tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    assert "max_length 64" in result.stdout and "padded batches of 2 pairs" in result.stdout
