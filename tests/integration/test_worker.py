"""dpo-worker end to end on the bundled example data: real processes, real mpirun ranks, real
checkpoints on disk."""
import json
import math
import os
import shutil
import signal
import subprocess
import time

import pytest
from safetensors.torch import load_file

from worker_runs import EXAMPLES, WORKER, metrics, run_worker, spec

KEYS = ("loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected",
        "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected",
        "logits/chosen", "logits/rejected", "tokens/s", "pairs/s", "padding_fraction")


def test_trains_and_logs_trl_metric_names(tmp_path):
    run_worker(tmp_path, **{"train.save_steps": "2", "train.save_total_limit": "2"})
    lines = metrics(tmp_path)
    assert [l["step"] for l in lines] == [1, 2, 3, 4, 5, 6]
    for key in KEYS:
        assert all(key in l and l[key] is not None for l in lines), key
    assert lines[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference at step 1
    assert 0.0 <= lines[0]["padding_fraction"] < 1.0
    # Checkpoints every 2 steps, the last 2 kept, each a complete HF model directory plus
    # optimizer state.
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    for step in (4, 6):
        ckpt = tmp_path / "run" / f"checkpoint-{step}"
        for name in ("model/config.json", "model/model.safetensors", "model/tokenizer.json",
                     "optimizer.safetensors", "trainer_state.json"):
            assert (ckpt / name).exists(), name
        state = json.loads((ckpt / "trainer_state.json").read_text())
        assert state["global_step"] == step


def test_learns_when_it_sees_the_same_pairs_again(tmp_path):
    # 4 pairs = one batch per epoch: six steps on the same pairs must lower the loss.
    data = tmp_path / "four.jsonl"
    data.write_text("".join((EXAMPLES / "data" / "hh_rlhf_sample.jsonl").read_text().splitlines(True)[:4]))
    run_worker(tmp_path, **{"data.train": f'"{data}"', "data.max_length": "1024",
                            "train.save_steps": "100"})
    losses = [l["loss"] for l in metrics(tmp_path)]
    assert losses[-1] < losses[0] - 0.01, losses


def test_resume_continues_the_same_loss_curve(tmp_path):
    straight = tmp_path / "straight"
    run_worker(straight)
    # Another job picks up the straight run's step-3 checkpoint, as a job restarted after an
    # interruption would: model, optimizer, schedule position and data position all come from it,
    # so steps 4-6 must equal the straight run's.
    resumed = tmp_path / "resumed"
    (resumed / "run").mkdir(parents=True)
    shutil.copytree(straight / "run" / "checkpoint-3", resumed / "run" / "checkpoint-3")
    run_worker(resumed, **{"output.resume_from_checkpoint": '"latest"'})
    a = {l["step"]: l for l in metrics(straight)}
    b = {l["step"]: l for l in metrics(resumed)}
    assert sorted(b) == [4, 5, 6]
    for step in (4, 5, 6):
        for key in ("loss", "grad_norm", "rewards/chosen", "rewards/rejected"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-6, abs=1e-9), (step, key)


def test_two_mpi_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    common = {"train.max_steps": "3", "train.save_steps": "100",
              "data.train_sampling_strategy": "sequential"}
    run_worker(one, **common, **{"train.per_device_train_batch_size": "4"})
    run_worker(two, ranks=2, **common, **{"train.per_device_train_batch_size": "2"})
    # The same global batch again as 2 ranks x 2 accumulated micro-batches of 1 pair: only the
    # last micro-batch's backward launches the gradient all-reduces, here from the backward of
    # checkpointed (recomputed) layers.
    accumulated = tmp_path / "accumulated"
    run_worker(accumulated, ranks=2, **common, **{"train.per_device_train_batch_size": "1",
                                                  "train.gradient_accumulation_steps": "2",
                                                  "train.gradient_checkpointing": "true"})
    for a, b, c in zip(metrics(one), metrics(two), metrics(accumulated)):
        for key in ("loss", "grad_norm", "rewards/chosen", "rewards/rejected", "logps/chosen"):
            # Different batch shapes per rank change float rounding, not the math.
            # Rewards are differences of ~-200 log-probs: absolute noise ~1e-6 in fp32.
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
            assert c[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
    assert len(metrics(accumulated)) == len(metrics(one)) == 3
    # Each rank's own figures (docs/worker_status.md): one file per rank, at the last step.
    for run, ranks in ((one, 1), (two, 2), (accumulated, 2)):
        files = sorted((run / "run" / "ranks").glob("rank-*.json"))
        assert [f.name for f in files] == [f"rank-{r}.json" for r in range(ranks)], files
        for r, f in enumerate(files):
            status = json.loads(f.read_text())
            figures = status["metrics"]
            assert (status["rank"], status["world_size"], status["step"]) == (r, ranks, 3)
            assert figures["skipped_steps_total"] == 0 and figures["peak_memory_bytes"] > 0
            assert 0 < figures["comm_seconds"] < figures["step_seconds"] if ranks > 1 else figures["comm_seconds"] == 0
            assert (0 <= figures["comm_hidden_ratio"] <= 1) if ranks > 1 else "comm_hidden_ratio" not in figures
        # Rank 0's own tokens/s is metrics.jsonl's (which scales it by the ranks) over the ranks.
        rank0 = json.loads(files[0].read_text())["metrics"]
        last = metrics(run)[-1]
        assert rank0["tokens_per_second"] * ranks == pytest.approx(last["tokens/s"], rel=1e-9)
        assert rank0["peak_memory_bytes"] / 2**30 == pytest.approx(last["peak_memory_gib"], rel=1e-9)


def test_non_finite_steps_are_skipped_then_abort(tmp_path):
    # A huge learning rate drives the weights to inf after the first update; every later step
    # is non-finite, so after 3 of them the job must stop with a clear reason and no checkpoint
    # of non-finite weights may exist.
    proc = run_worker(tmp_path, check=False, **{"train.learning_rate": "1e30",
                                                "train.max_consecutive_bad_steps": "3",
                                                "train.max_grad_norm": "0",
                                                "train.save_steps": "1"})
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "3 consecutive steps with a non-finite loss or gradient" in last
    for ckpt in (tmp_path / "run").glob("checkpoint-*"):
        for name, tensor in load_file(ckpt / "model" / "model.safetensors").items():
            assert tensor.isfinite().all(), (ckpt.name, name)


def test_kill_mid_run_never_leaves_a_partial_checkpoint(tmp_path):
    out = tmp_path
    (out / "run").mkdir(parents=True)
    job = out / "job.yaml"
    job.write_text(spec(out, **{"train.max_steps": "40", "train.save_steps": "1"}))
    proc = subprocess.Popen([str(WORKER), "--job", str(job)], stderr=subprocess.PIPE,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "run").glob("checkpoint-2")):
        time.sleep(0.05)
    time.sleep(0.3)  # land somewhere inside a later save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = list((out / "run").glob("checkpoint-*"))
    assert ckpts, "no checkpoint was written before the kill"
    for ckpt in ckpts:  # every directory that looks like a checkpoint is complete
        state = json.loads((ckpt / "trainer_state.json").read_text())
        assert state["global_step"] == int(ckpt.name.split("-")[1])
        load_file(ckpt / "model" / "model.safetensors")
        load_file(ckpt / "optimizer.safetensors")


def test_bad_spec_exits_nonzero_with_the_key_path(tmp_path):
    proc = run_worker(tmp_path, check=False, **{"train.learning_rat": "1e-3"})
    assert proc.returncode != 0
    assert "train.learning_rat" in proc.stderr and "learning_rate" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _curve(out, keys=("loss", "grad_norm", "rewards/chosen", "rewards/rejected")):
    return [[l[k] for k in keys] for l in metrics(out)]


def test_same_seed_gives_the_same_run(tmp_path):
    run_worker(tmp_path / "a", **{"train.save_steps": "100"})
    run_worker(tmp_path / "b", **{"train.save_steps": "100"})
    assert _curve(tmp_path / "a") == _curve(tmp_path / "b")  # bit for bit
    run_worker(tmp_path / "c", **{"train.save_steps": "100", "train.seed": "4"})
    assert _curve(tmp_path / "c") != _curve(tmp_path / "a")


def test_precomputed_reference_matches_a_live_one_and_is_reused(tmp_path):
    live = tmp_path / "live"
    run_worker(live, **{"train.save_steps": "100"})
    pre = tmp_path / "pre"
    first = run_worker(pre, **{"train.save_steps": "100", "reference.mode": "precomputed"})
    assert "computed reference log-probs" in first.stderr
    caches = list((pre / "prepared").glob("train-ref-logps-*.safetensors"))
    assert len(caches) == 1
    # Precomputing scores pairs in other batches (other packing): float rounding only.
    for a, b in zip(_curve(live), _curve(pre)):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    # A second job on the same model and data reuses the file instead of running the reference.
    again = run_worker(pre, **{"train.save_steps": "100", "reference.mode": "precomputed",
                               "output.dir": f'"{pre / "run2"}"'})
    assert "reused reference log-probs" in again.stderr


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    common = {"train.save_steps": "100", "data.train_sampling_strategy": "sequential",
              "train.max_steps": "3"}
    run_worker(tmp_path / "big", **common, **{"train.per_device_train_batch_size": "4"})
    run_worker(tmp_path / "acc", **common, **{"train.per_device_train_batch_size": "2",
                                              "train.gradient_accumulation_steps": "2"})
    for a, b in zip(_curve(tmp_path / "big"), _curve(tmp_path / "acc")):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)


def test_activation_checkpointing_changes_memory_not_numbers(tmp_path):
    run_worker(tmp_path / "plain", **{"train.save_steps": "100", "train.max_steps": "3"})
    run_worker(tmp_path / "ckpt", **{"train.save_steps": "100", "train.max_steps": "3",
                                     "train.gradient_checkpointing": "true"})
    for a, b in zip(_curve(tmp_path / "plain"), _curve(tmp_path / "ckpt")):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9)


def test_bf16_autocast_tracks_fp32(tmp_path):
    run_worker(tmp_path / "fp32", **{"train.save_steps": "100", "train.max_steps": "3"})
    run_worker(tmp_path / "bf16", **{"train.save_steps": "100", "train.max_steps": "3",
                                     "train.bf16": "true"})
    fp32, bf16 = metrics(tmp_path / "fp32"), metrics(tmp_path / "bf16")
    assert bf16[0]["loss"] == pytest.approx(fp32[0]["loss"], rel=1e-2)
    assert bf16[0]["logps/chosen"] == pytest.approx(fp32[0]["logps/chosen"], rel=1e-2)
    assert bf16[0]["logps/chosen"] != fp32[0]["logps/chosen"]  # autocast really ran in bf16


def test_padding_free_batches_equal_padded_ones(tmp_path):
    run_worker(tmp_path / "padded", **{"train.save_steps": "100", "data.padding_free": "false"})
    run_worker(tmp_path / "packed", **{"train.save_steps": "100", "data.padding_free": "true"})
    padded, packed = metrics(tmp_path / "padded"), metrics(tmp_path / "packed")
    for a, b in zip(_curve(tmp_path / "padded"), _curve(tmp_path / "packed")):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)  # rewards: ~1e-6 fp32 noise
    # On the CPU packing puts a batch in one row: no padding at all.
    assert all(p["padding_fraction"] > 0.01 for p in padded)
    assert all(q["padding_fraction"] == 0 for q in packed)
