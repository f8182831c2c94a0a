"""dpo-worker under faults, end to end: status.json, the output-directory lock, leftover
checkpoint saves, SIGTERM (stop after a checkpoint, resume with no step lost) and a stopped rank
(collective timeout naming it). Real processes and real mpirun ranks on the tiny example model."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from worker_runs import EXAMPLES, metrics, run_worker, worker_command

ENV = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def status(out: Path) -> dict:
    return json.loads((out / "run" / "status.json").read_text())


def start_worker(out: Path, ranks: int = 1, env: dict | None = None, **overrides) -> subprocess.Popen:
    """Starts dpo-worker (under mpirun when ranks > 1) in its own session and returns at once."""
    return subprocess.Popen(worker_command(out, ranks, **overrides), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env or ENV, start_new_session=True)


def wait_for_steps(out: Path, steps: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    path = out / "run" / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= steps:
            return
        assert proc.poll() is None, f"worker exited {proc.returncode}: {proc.stderr.read()[-2000:]}"
        time.sleep(0.05)
    raise AssertionError(f"no {steps} logged steps within {timeout} s")


def rank_pids(mpirun_pid: int) -> dict[int, int]:
    """rank -> pid of the dpo-worker processes mpirun started (from their environment)."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != mpirun_pid:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for item in environ:
            if item.startswith(b"OMPI_COMM_WORLD_RANK="):
                ranks[int(item.split(b"=", 1)[1])] = int(entry.name)
    return ranks


def test_status_after_success(tmp_path):
    run_worker(tmp_path)
    s = status(tmp_path)
    assert s["state"] == "succeeded"
    assert s["step"] == s["total_steps"] == 6
    assert s["metrics"]["loss"] == metrics(tmp_path)[-1]["loss"]
    assert s["error_code"] is None and s["rank"] is None and s["reason"] == ""


def test_bad_data_fails_with_its_code_and_the_failing_ranks_own_reason(tmp_path):
    data = tmp_path / "bad.jsonl"
    lines = (EXAMPLES / "data" / "hh_rlhf_sample.jsonl").read_text().splitlines(True)[:8]
    lines[4] = '{"chosen": "only a chosen answer"}\n'
    data.write_text("".join(lines))
    proc = run_worker(tmp_path, ranks=2, check=False, **{"data.train": f'"{data}"'})
    assert proc.returncode != 0
    s = status(tmp_path)
    assert s["state"] == "failed"
    assert s["error_code"] == "bad_data"
    assert s["rank"] == 0  # rank 0 prepares the data
    assert f"{data}:5" in s["reason"] and "rejected" in s["reason"], s["reason"]
    assert "MPI" not in s["reason"] and "\n" not in s["reason"]


def test_second_worker_on_the_same_output_dir_fails_at_once_naming_it(tmp_path):
    first = start_worker(tmp_path / "a", **{"train.max_steps": "100000", "train.save_steps": "100000"})
    try:
        wait_for_steps(tmp_path / "a", 1, first)
        run_dir = tmp_path / "a" / "run"
        started = time.time()
        second = run_worker(tmp_path / "b", check=False, timeout=60,
                            **{"output.dir": f'"{run_dir}"'})
        assert time.time() - started < 30
        assert second.returncode != 0
        last = second.stderr.strip().splitlines()[-1]
        assert str(run_dir) in last and f"pid {first.pid}" in last, last
        assert status(tmp_path / "a")["state"] == "running"  # the holder's status is untouched
        # SIGTERM to a single worker: it stops after a checkpoint with EX_TEMPFAIL.
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 75
        s = status(tmp_path / "a")
        assert s["state"] == "interrupted" and s["error_code"] == "interrupted"
        assert (run_dir / f"checkpoint-{s['step']}").is_dir()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_leftover_checkpoint_saves_are_removed_at_start(tmp_path):
    leftover = tmp_path / "run" / ".tmp-checkpoint-3-4242"
    (leftover / "model").mkdir(parents=True)
    (leftover / "model" / "model.safetensors").write_bytes(b"\0" * 4096)
    proc = run_worker(tmp_path, **{"train.max_steps": "2"})
    assert not leftover.exists()
    assert "removed 1 unfinished checkpoint save" in proc.stderr
    assert not list((tmp_path / "run").glob(".tmp-checkpoint-*"))
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2"]


def test_sigterm_to_mpirun_checkpoints_then_resume_loses_no_step(tmp_path):
    # Enough steps (~15 s idle) that the run is still going when mpirun passes SIGTERM on.
    steps = 2000
    common = {"train.max_steps": str(steps), "train.save_steps": "100000",
              "train.per_device_train_batch_size": "2"}
    # Open MPI 4.1's mpirun passes SIGTERM on after odls_base_sigkill_timeout seconds and sends
    # SIGKILL as many seconds later (default 1): give the ranks time to save.
    env = dict(ENV, OMPI_MCA_odls_base_sigkill_timeout="5")
    proc = start_worker(tmp_path, ranks=2, env=env, **common)
    try:
        wait_for_steps(tmp_path, 3, proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    s = status(tmp_path)
    assert s["state"] == "interrupted" and s["error_code"] == "interrupted", s
    stopped = s["step"]
    assert 3 <= stopped < steps
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == [f"checkpoint-{stopped}"]
    state = json.loads((tmp_path / "run" / f"checkpoint-{stopped}" / "trainer_state.json").read_text())
    assert state["global_step"] == stopped
    assert [l["step"] for l in metrics(tmp_path)] == list(range(1, stopped + 1))
    # Every rank exited 75 (EX_TEMPFAIL); Open MPI's mpirun reports a signalled job as 1.
    assert proc.returncode != 0

    run_worker(tmp_path, ranks=2, **common, **{"output.resume_from_checkpoint": '"latest"'})
    assert [l["step"] for l in metrics(tmp_path)] == list(range(1, steps + 1))  # each step once
    assert status(tmp_path)["state"] == "succeeded"


def test_a_stopped_rank_fails_the_job_within_the_timeout_naming_it(tmp_path):
    timeout = 5
    proc = start_worker(tmp_path, ranks=2, **{"train.max_steps": "100000", "train.save_steps": "100000",
                                              "train.collective_timeout_seconds": str(timeout)})
    stopped_pid = None
    try:
        wait_for_steps(tmp_path, 2, proc)
        # Rank 1's watchdog has written its heartbeat, which is how rank 0 will name it.
        heartbeat = tmp_path / "run" / ".heartbeat-rank-1"
        deadline = time.time() + 30
        while not heartbeat.exists():
            assert time.time() < deadline, "rank 1 wrote no heartbeat"
            time.sleep(0.05)
        stopped_pid = rank_pids(proc.pid)[1]
        os.kill(stopped_pid, signal.SIGSTOP)
        started = time.time()
        proc.wait(timeout=timeout + 60)
        elapsed = time.time() - started
    finally:
        if stopped_pid is not None:
            try:
                os.kill(stopped_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert elapsed < timeout + 30, elapsed
    s = status(tmp_path)
    assert s["state"] == "failed"
    assert s["error_code"] == "collective_timeout"
    assert s["rank"] == 1, s
    assert "rank 1 stopped responding" in s["reason"], s["reason"]
    assert "collective_timeout_seconds" in s["reason"]
