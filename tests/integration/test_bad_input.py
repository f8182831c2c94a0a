"""Bad input found outside the service (issue 9, point 10): each is refused with a message naming
the file (and line, field or tensor), never a hang, a crash, a silent broadcast or a null score."""
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from worker_runs import BINARY_DIR, EXAMPLES, run_worker

PREPARE = BINARY_DIR / "bin" / "dpo-prepare"
EVAL = BINARY_DIR / "bin" / "dpo-eval"
TOKENIZER = EXAMPLES / "tokenizer"
HELDOUT = EXAMPLES / "data" / "hh_rlhf_heldout.jsonl"
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def run(cmd, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          env=ENV)


def refused(proc: subprocess.CompletedProcess, *parts: str) -> str:
    """Asserts the process failed and its error names every one of `parts`."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    for part in parts:
        assert part in proc.stderr, (part, proc.stderr[-3000:])
    return proc.stderr


def prepare(tmp_path: Path, data: Path, tokenizer: Path = TOKENIZER, *extra, timeout=120):
    return run([PREPARE, "--tokenizer", tokenizer, "--data", data, "--out", tmp_path / "out.bin",
                *extra], timeout=timeout)


def evaluate(tmp_path: Path, policy: Path, data: Path = HELDOUT, tokenizer: Path = TOKENIZER):
    return run([EVAL, "--policy", policy, "--tokenizer", tokenizer, "--data", data, "--output",
                tmp_path / "scores.jsonl", "--device", "cpu"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 3-step run: its checkpoint-3 and its initial-policy (an HF model directory)."""
    out = tmp_path_factory.mktemp("trained")
    run_worker(out, **{"train.max_steps": "3", "train.save_steps": "3"})
    return out


def edited_model(trained: Path, dest: Path, edit) -> Path:
    """A copy of the run's initial policy whose model.safetensors went through edit(tensors)."""
    shutil.copytree(trained / "run" / "initial-policy", dest)
    tensors = load_file(dest / "model.safetensors")
    edit(tensors)
    save_file(tensors, dest / "model.safetensors")
    return dest


def tiny_config(tmp_path: Path, **changes) -> Path:
    config = json.loads((EXAMPLES / "tiny-llama" / "config.json").read_text())
    config.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


# 1. A config whose parameters could never fit is refused before allocation, naming the field.
def test_a_config_that_could_never_fit_is_refused_naming_the_field(tmp_path):
    for field, value in (("num_hidden_layers", 1_000_000_000), ("hidden_size", 1 << 40)):
        config = tiny_config(tmp_path, **{field: value})
        start = time.monotonic()
        proc = run_worker(tmp_path / field, check=False, timeout=60,
                          **{"model.random": f'{{config: "{config}", seed: 7}}'})
        # Allocating 5e13 parameters would take the machine down long before this.
        assert time.monotonic() - start < 30
        refused(proc, f"{config}: field '{field}'", "too large", "parameters")


# 2. A resumed checkpoint whose tensor shape or dtype differs is refused, naming the tensor.
@pytest.mark.parametrize("name,change,expect", [
    ("model.norm.weight", lambda t: torch.ones(1), "[1]"),  # was broadcast into the [64] weight
    ("model.norm.weight", lambda t: t.half(), "Half"),
])
def test_a_resumed_weight_of_another_shape_or_dtype_is_refused(trained, tmp_path, name, change,
                                                              expect):
    checkpoint = tmp_path / "run" / "checkpoint-3"
    shutil.copytree(trained / "run" / "checkpoint-3", checkpoint)
    weights = checkpoint / "model" / "model.safetensors"
    tensors = load_file(weights)
    tensors[name] = change(tensors[name])
    save_file(tensors, weights)
    proc = run_worker(tmp_path, check=False, **{"output.resume_from_checkpoint": '"latest"'})
    refused(proc, f"{weights}: tensor '{name}'", expect, "refusing to resume")


def test_a_resumed_optimizer_state_of_another_length_is_refused(trained, tmp_path):
    checkpoint = tmp_path / "run" / "checkpoint-3"
    shutil.copytree(trained / "run" / "checkpoint-3", checkpoint)
    optimizer = checkpoint / "optimizer.safetensors"
    tensors = load_file(optimizer)
    tensors["exp_avg.model.norm.weight"] = torch.zeros(65)
    save_file(tensors, optimizer)
    proc = run_worker(tmp_path, check=False, **{"output.resume_from_checkpoint": '"latest"'})
    refused(proc, f"{optimizer}: tensor 'exp_avg.model.norm.weight' holds 65 elements", "has 64")


def test_a_sharded_optimizer_shard_shorter_than_its_manifest_is_refused(tmp_path):
    straight = tmp_path / "straight"
    common = {"train.max_steps": "3", "train.save_steps": "3", "train.sharding": "optimizer",
              "train.per_device_train_batch_size": "2"}
    run_worker(straight, ranks=2, **common)
    checkpoint = tmp_path / "resumed" / "run" / "checkpoint-3"
    shutil.copytree(straight / "run" / "checkpoint-3", checkpoint)
    shard = checkpoint / "optimizer-rank-00001-of-00002.safetensors"
    tensors = load_file(shard)
    key = next(k for k in sorted(tensors) if k.startswith("exp_avg."))
    tensors[key] = tensors[key][:-1].clone()
    save_file(tensors, shard)
    proc = run_worker(tmp_path / "resumed", ranks=2, check=False,
                      **common, **{"output.resume_from_checkpoint": '"latest"'})
    refused(proc, f"{shard}: tensor '{key}' holds", "shard_numel")


# 3. A vocabulary smaller than the tokenizer's largest id is refused at set-up, naming both.
def test_a_vocabulary_smaller_than_the_tokenizer_is_refused_naming_both(trained, tmp_path):
    config = tiny_config(tmp_path, vocab_size=512)
    proc = run_worker(tmp_path / "worker", check=False,
                      **{"model.random": f'{{config: "{config}", seed: 7}}'})
    refused(proc, f"{config}: vocab_size 512 is smaller than the tokenizer's {TOKENIZER}",
            "largest token id is 999")
    assert not (tmp_path / "worker" / "prepared").exists()  # refused before preparing data
    policy = tmp_path / "policy"
    shutil.copytree(trained / "run" / "initial-policy", policy)
    config = json.loads((policy / "config.json").read_text())
    config["vocab_size"] = 512
    (policy / "config.json").write_text(json.dumps(config))
    refused(evaluate(tmp_path, policy), f"{policy / 'config.json'}: vocab_size 512",
            f"tokenizer's {TOKENIZER}")


# 4. A regex match-limit error names the tokenizer file and the data line.
def test_a_regex_match_limit_names_the_tokenizer_file_and_the_data_line(tmp_path):
    tokenizer = tmp_path / "tokenizer"
    shutil.copytree(TOKENIZER, tokenizer)
    spec = json.loads((tokenizer / "tokenizer.json").read_text())
    # Nested quantifiers: exponential backtracking over a run of a's that no b follows.
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(a+)+b"
    (tokenizer / "tokenizer.json").write_text(json.dumps(spec))
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "chosen": " ab", "rejected": " b"}) + "\n" +
                    json.dumps({"prompt": "hi", "chosen": " " + "a" * 40 + "!b",
                                "rejected": " b"}) + "\n")
    refused(prepare(tmp_path, data, tokenizer),
            f"{data}:2: {tokenizer / 'tokenizer.json'}: pre_tokenizer", "regex match failed",
            "limit")


# 5. Non-finite weights are refused naming the file and tensor; dpo-eval writes no null scores.
def test_non_finite_weights_are_refused_naming_the_file_and_tensor(trained, tmp_path):
    def poison(tensors):
        tensors["model.layers.1.mlp.up_proj.weight"][3, 5] = float("nan")
    policy = edited_model(trained, tmp_path / "policy", poison)
    where = f"{policy / 'model.safetensors'}: tensor 'model.layers.1.mlp.up_proj.weight'"
    refused(evaluate(tmp_path, policy), where, "1 non-finite value")
    # Training from it, replicated and sharded (read slice by slice through a ParameterSource).
    for sharding in ("none", "full"):
        proc = run_worker(tmp_path / sharding, check=False,
                          **{"model.random": None, "model.path": f'"{policy}"',
                             "train.sharding": sharding})
        refused(proc, where, "non-finite")


def test_dpo_eval_fails_on_non_finite_scores_instead_of_writing_null(trained, tmp_path):
    def overflow(tensors):  # finite weights whose logits overflow float32
        tensors["model.norm.weight"].fill_(3e38)
    policy = edited_model(trained, tmp_path / "policy", overflow)
    stderr = refused(evaluate(tmp_path, policy), f"{HELDOUT}:1:", "non-finite log-probability")
    assert "Traceback" not in stderr
    scores = tmp_path / "scores.jsonl"
    assert not scores.exists() or "null" not in scores.read_text()


# 6. dpo-prepare and dpo-eval fail on a data file with no pairs.
@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_a_data_file_with_no_pairs_fails(trained, tmp_path, content):
    data = tmp_path / "empty.jsonl"
    data.write_text(content)
    refused(prepare(tmp_path, data), f"{data}: no preference pairs")
    refused(evaluate(tmp_path, trained / "run" / "initial-policy", data),
            f"{data}: no preference pairs")


# 7. A line longer than the limit fails with file:line, in bounded memory (plain and gzip).
PEAK_RSS = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(proc.stderr)
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.parametrize("name", ["long.jsonl", "long.jsonl.gz"])
def test_a_100_mb_line_fails_with_file_and_line_in_bounded_memory(tmp_path, name):
    data = tmp_path / name
    first = json.dumps({"prompt": "hi", "chosen": " a", "rejected": " b"}) + "\n"
    long_line = ('{"prompt": "' + "x" * (100 << 20) + '", "chosen": " a", "rejected": " b"}\n')
    opener = gzip.open if name.endswith(".gz") else open
    with opener(data, "wt") as f:
        f.write(first + long_line)
    # A fresh interpreter measures only dpo-prepare (RUSAGE_CHILDREN keeps the largest child).
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, str(PREPARE), "--tokenizer",
                           str(TOKENIZER), "--data", str(data), "--out", str(tmp_path / "out.bin")],
                          capture_output=True, text=True, timeout=120, env=ENV)
    returncode, peak_kib = map(int, proc.stdout.split())
    assert returncode != 0
    assert f"{data}:2: line is longer than 16777216 bytes" in proc.stderr, proc.stderr[-2000:]
    assert peak_kib < 500 * 1024, peak_kib  # it cost 3.7-4 GB before the limit


def test_data_max_line_bytes_in_the_job_spec_sets_the_limit(tmp_path):
    data = tmp_path / "data.jsonl"
    lines = (EXAMPLES / "data" / "hh_rlhf_sample.jsonl").read_text().splitlines()
    longest = max(range(len(lines)), key=lambda i: len(lines[i].encode()))
    data.write_text("\n".join(lines) + "\n")
    limit = len(lines[longest].encode()) - 1
    proc = run_worker(tmp_path / "run", check=False,
                      **{"data.train": f'"{data}"', "data.max_line_bytes": str(limit)})
    refused(proc, f"{data}:{longest + 1}: line is longer than {limit} bytes")


# 8. A FIFO given as data (or as a tokenizer or model file) fails at once instead of blocking.
def test_a_fifo_fails_at_once_instead_of_blocking(trained, tmp_path):
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    refused(prepare(tmp_path, fifo, timeout=20), f"{fifo}: not a regular file")
    tokenizer = tmp_path / "tokenizer.json"
    os.mkfifo(tokenizer)
    refused(prepare(tmp_path, HELDOUT, tokenizer, timeout=20), f"{tokenizer}: not a regular file")
    policy = tmp_path / "policy"
    shutil.copytree(trained / "run" / "initial-policy", policy)
    (policy / "model.safetensors").unlink()
    os.mkfifo(policy / "model.safetensors")
    proc = run([EVAL, "--policy", policy, "--tokenizer", TOKENIZER, "--data", HELDOUT,
                "--output", tmp_path / "scores.jsonl", "--device", "cpu"], timeout=20)
    refused(proc, f"{policy / 'model.safetensors'}: not a regular file")
    proc = run_worker(tmp_path / "worker", check=False, timeout=60,
                      **{"data.train": f'"{fifo}"'})
    refused(proc, str(fifo))
