"""The command lines of the training engine's programs: dpo-worker, dpo-eval, and the benchmarks
allreduce-bench and logps-memory-bench (docs/cli.md). Strict numbers, flags in any position,
generated --help, the exit statuses. dpo-worker's statuses 75 (stopped by SIGTERM) and 76 (a
collective timed out) are tested in test_worker_faults.py, by the faults that cause them; a wrong
collective result, allreduce-bench's status 1, cannot be caused on demand."""
from __future__ import annotations

import json

import pytest

from cli_cases import (EXAMPLES, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, TINY_SPEC, Case, check_case, check_help_lists,
                       run_case)

PAIRS = ('{{"prompt": "Hi", "chosen": " there", "rejected": " no"}}\n'
         '{{"prompt": "One", "chosen": " two", "rejected": " three"}}\n')
WORKER, EVAL = "bin/dpo-worker", "bin/dpo-eval"
ALLREDUCE, LOGPS = "bin/allreduce-bench", "bin/logps-memory-bench"
# dpo-eval's cases score with {tmp}/policy, a random tiny Llama that test_case writes first.
POLICY = "{tmp}/policy"
EVAL_ARGS = ("--policy", POLICY, "--tokenizer", "{examples}/tokenizer", "--data", "{tmp}/pairs.jsonl",
             "--output", "{tmp}/scores.jsonl", "--device", "cpu")
SMALL_LOGPS = ("--batch", "1", "--time", "8", "--vocab", "32", "--hidden", "8", "--threads", "1")

WORKER_USAGE = "usage: a flag unknown, malformed or missing, or --job and --plan together"
EVAL_USAGE = "usage: a flag unknown, malformed or missing"
BENCH_USAGE = "usage: a flag unknown or malformed"

CASES = [
    Case(WORKER, ("--plan", "{tmp}/job.yaml", "--ranks", "2"), EXIT_OK, files={"job.yaml": TINY_SPEC},
         stdout_has="memory per rank on 2 CPU rank(s)", when="the job is trained, or its plan printed"),
    Case(WORKER, ("--job", "{tmp}/missing.yaml"), EXIT_FAILURE, stderr_has="missing.yaml: cannot open",
         when="the job or its plan failed (a one-line reason on stderr)"),
    Case(WORKER, ("--job", "{tmp}/job.yaml", "--bogus"), EXIT_USAGE, stderr_has="not expected: --bogus",
         when=WORKER_USAGE),
    Case(WORKER, ("--plan", "{tmp}/job.yaml", "--ranks", "2x"), EXIT_USAGE,
         stderr_has='--ranks: expected an integer >= 1, got "2x"', when=WORKER_USAGE),
    Case(WORKER, ("--plan", "{tmp}/job.yaml", "--ranks", "2", "--gpu-memory", "nan"), EXIT_USAGE,
         stderr_has="--gpu-memory: expected a number > 0", when=WORKER_USAGE),
    Case(WORKER, ("--plan", "{tmp}/job.yaml"), EXIT_USAGE, stderr_has="--plan requires --ranks",
         when=WORKER_USAGE),
    Case(WORKER, (), EXIT_USAGE, stderr_has="Exactly 1 option from [--job,--plan] is required",
         when=WORKER_USAGE),
    Case(WORKER, ("--job", "{tmp}/job.yaml", "--plan", "{tmp}/job.yaml", "--ranks", "1"), EXIT_USAGE,
         stderr_has="2 were given", when=WORKER_USAGE),

    Case(EVAL, EVAL_ARGS, EXIT_OK, files={"pairs.jsonl": PAIRS}, stdout_has='"pairs":2',
         when="the pairs are scored (the summary on stdout)"),
    Case(EVAL, EVAL_ARGS[:5] + ("{tmp}/missing.jsonl",) + EVAL_ARGS[6:], EXIT_FAILURE,
         stderr_has="missing.jsonl", when="a model, tokenizer or data file cannot be read or scored"),
    Case(EVAL, EVAL_ARGS + ("--bogus",), EXIT_USAGE, stderr_has="not expected: --bogus", when=EVAL_USAGE),
    Case(EVAL, EVAL_ARGS + ("--batch-size", "8x"), EXIT_USAGE,
         stderr_has='--batch-size: expected an integer >= 1, got "8x"', when=EVAL_USAGE),
    Case(EVAL, EVAL_ARGS + ("--beta", "0"), EXIT_USAGE, stderr_has="--beta: expected a number > 0",
         when=EVAL_USAGE),
    Case(EVAL, EVAL_ARGS + ("--implicit-prompt", "first_turn"), EXIT_USAGE, stderr_has="--implicit-prompt",
         when=EVAL_USAGE),
    Case(EVAL, EVAL_ARGS[2:], EXIT_USAGE, stderr_has="--policy is required", when=EVAL_USAGE),

    Case(ALLREDUCE, ("--min-bytes", "1024", "--max-bytes", "1024", "--iters", "1"), EXIT_OK,
         stdout_has='"collective": "reduce_scatter"', when="every collective gave the right result"),
    Case(ALLREDUCE, ("--iters", "2x"), EXIT_USAGE, stderr_has='--iters: expected an integer >= 1, got "2x"',
         when=BENCH_USAGE),
    Case(ALLREDUCE, ("--min-bytes", "0"), EXIT_USAGE, stderr_has="--min-bytes: expected an integer in [1, ",
         when=BENCH_USAGE),
    Case(ALLREDUCE, ("--device", "tpu"), EXIT_USAGE, stderr_has="--device", when=BENCH_USAGE),
    Case(ALLREDUCE, ("--bogus",), EXIT_USAGE, stderr_has="not expected: --bogus", when=BENCH_USAGE),

    Case(LOGPS, ("--impl", "chunked", "--chunk", "4") + SMALL_LOGPS, EXIT_OK, stdout_has='"impl": "chunked"',
         when="the step ran (one JSON line on stdout)"),
    # 2^31-1 cubed elements: more than torch can count.
    Case(LOGPS, ("--impl", "plain", "--batch", "2147483647", "--time", "2147483647", "--hidden", "2147483647"),
         EXIT_FAILURE, stderr_has="logps-memory-bench: ", when="the step failed (out of memory, a size torch refuses)"),
    Case(LOGPS, SMALL_LOGPS, EXIT_USAGE, stderr_has="--impl is required", when=BENCH_USAGE + ", or --impl missing"),
    Case(LOGPS, ("--impl", "fused"), EXIT_USAGE, stderr_has="--impl", when=BENCH_USAGE + ", or --impl missing"),
    Case(LOGPS, ("--impl", "plain", "--batch", "2x"), EXIT_USAGE,
         stderr_has='--batch: expected an integer >= 1, got "2x"', when=BENCH_USAGE + ", or --impl missing"),
    Case(LOGPS, ("--impl", "plain", "--bogus"), EXIT_USAGE, stderr_has="not expected: --bogus",
         when=BENCH_USAGE + ", or --impl missing"),
]


def write_policy(directory) -> None:
    """A random tiny Llama (examples/tiny-llama's config) as a model directory, for dpo-eval."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig.from_pretrained(EXAMPLES / "tiny-llama")).save_pretrained(directory)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}-{c.exit}-{'-'.join(c.args)[:40]}")
def test_case(case: Case, tmp_path):
    if POLICY in case.args and case.exit != EXIT_USAGE:  # bad usage stops before any model is read
        write_policy(tmp_path / "policy")
    check_case(case, tmp_path)


def test_worker_help(tmp_path):
    check_help_lists(WORKER, ["--job", "--plan", "--ranks", "--gpu-memory", "--json"], tmp_path)


def test_eval_help(tmp_path):
    check_help_lists(EVAL, ["--policy", "--reference", "--data", "--output", "--beta", "--tokenizer",
                            "--max-length", "--batch-size", "--implicit-prompt", "--device", "--dtype"], tmp_path)


def test_allreduce_bench_help(tmp_path):
    check_help_lists(ALLREDUCE, ["--device", "--min-bytes", "--max-bytes", "--iters"], tmp_path)


def test_logps_memory_bench_help(tmp_path):
    check_help_lists(LOGPS, ["--impl", "--batch", "--time", "--vocab", "--hidden", "--chunk", "--threads"],
                     tmp_path)


def test_worker_plan_flags_in_any_order(tmp_path):
    result = run_case(Case(WORKER, ("--json", "--gpu-memory=0.001", "--ranks=3", "--plan={tmp}/job.yaml"),
                           EXIT_OK, files={"job.yaml": TINY_SPEC}), tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    plan = json.loads(result.stdout)
    assert plan["ranks"] == 3 and plan["device_gib"] == 0.001, plan


def test_eval_flags_in_any_order(tmp_path):
    write_policy(tmp_path / "policy")
    args = ("--output={tmp}/scores.jsonl", "--batch-size=1", "--device=cpu", "--data={tmp}/pairs.jsonl",
            "--beta=0.5", "--tokenizer={examples}/tokenizer", "--policy={tmp}/policy")
    result = run_case(Case(EVAL, args, EXIT_OK, files={"pairs.jsonl": PAIRS}), tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    summary = json.loads(result.stdout)
    assert summary["pairs"] == 2 and summary["beta"] == 0.5 and summary["reference_free"], summary
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == 2


def test_allreduce_bench_flags_in_any_order(tmp_path):
    result = run_case(Case(ALLREDUCE, ("--iters=1", "--max-bytes=4096", "--device=cpu", "--min-bytes=4096"),
                           EXIT_OK), tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["collective"] for line in lines] == ["all_reduce", "all_gather", "reduce_scatter"], lines
    assert all(line["bytes"] == 4096 for line in lines), lines


def test_logps_memory_bench_flags_in_any_order(tmp_path):
    args = ("--threads=1", "--vocab=32", "--hidden=8", "--time=8", "--batch=2", "--impl=reference")
    result = run_case(Case(LOGPS, args, EXIT_OK), tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    line = json.loads(result.stdout)
    assert (line["impl"], line["batch"], line["time"], line["vocab"], line["hidden"]) == ("reference", 2, 8, 32, 8)
