"""A job's life across failures, with real processes: coordinators killed and restarted, worker
groups killed or preempted, retries and cancellation. (A data preparation that never ends is
coordinator/job_runner_test.cc's: a FIFO no longer gets that far, it is refused at submission.)"""
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from coordinator_runs import COORDINATOR, Coordinator, job_service, skip_without_coordinator, submit
from worker_runs import MPIRUN

pytestmark = skip_without_coordinator

LONG = {"train.max_steps": "100000", "train.save_steps": "100000"}


def worker_pids(root, job_id):
    """Live (not zombie) processes running the spec of job `job_id` of the coordinator in `root`
    (the full path: other tests may run job 1 of their own coordinators meanwhile)."""
    marker = str(root / "jobs" / f"job-{job_id}" / "job.yaml").encode()
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and marker in (proc / "cmdline").read_bytes()
                    and (proc / "stat").read_text().split(") ")[1][0] != "Z"):
                pids.add(int(proc.name))
        except (OSError, IndexError):
            continue  # exited meanwhile
    return pids


def step(job):
    return int(job["step"].split("/")[0])


def train_steps(tmp_path, name):
    path = tmp_path / name / "run" / "metrics.jsonl"
    return [l["step"] for l in map(json.loads, path.read_text().splitlines()) if l["split"] == "train"]


def kill_coordinator(c):
    c.proc.kill()
    c.proc.wait(timeout=30)
    c.stop()


def wait_until(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def attempt_history(c, tmp_path, job_id):
    stub, messages = job_service(c.server, tmp_path / "stubs")
    return list(stub.GetJob(messages.GetJobRequest(id=job_id), timeout=30).attempt_history)


def test_a_second_coordinator_on_the_same_database_refuses_to_start(tmp_path):
    first = Coordinator(tmp_path)
    try:
        second = subprocess.run([str(COORDINATOR), "--listen", "127.0.0.1:0", "--db", str(tmp_path / "jobs.db"),
                                 "--work-dir", str(tmp_path / "other"), "--metrics-listen", "127.0.0.1:0"],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "in use by another dpo-coordinator" in second.stderr, second.stderr
        assert first.ctl("list").returncode == 0  # the first one is untouched
    finally:
        first.stop()
    # Once the first has stopped, the database is free again.
    Coordinator(tmp_path).stop()


def test_killed_coordinator_adopts_the_running_group_and_the_job_completes_once(tmp_path):
    first = Coordinator(tmp_path)
    job_id = submit(first, tmp_path, "adopted", **{"train.max_steps": "200", "train.save_steps": "1000"})
    first.wait(job_id, lambda j: j["state"] == "running" and step(j) >= 3)
    (pid,) = worker_pids(tmp_path, job_id)
    kill_coordinator(first)  # kill -9: the worker group keeps running, with no coordinator
    assert worker_pids(tmp_path, job_id) == {pid}
    second = Coordinator(tmp_path)
    try:
        seen = set()
        deadline = time.time() + 300
        while (job := second.job(job_id))["state"] == "running" and time.time() < deadline:
            seen |= worker_pids(tmp_path, job_id)
            time.sleep(0.2)
        assert seen <= {pid}, f"another worker group ran beside the adopted one: {seen}"
        assert job["state"] == "succeeded" and job["attempts"] == "1", job
        assert train_steps(tmp_path, "adopted") == list(range(1, 201))  # each step once
        (attempt,) = attempt_history(second, tmp_path, job_id)
        assert attempt.reason == "" and attempt.finished_unix_ms > 0
    finally:
        second.stop()


def test_a_job_that_finished_while_no_coordinator_ran_is_recorded_not_relaunched(tmp_path):
    first = Coordinator(tmp_path)
    job_id = submit(first, tmp_path, "finished", **{"train.max_steps": "200"})
    first.wait(job_id, lambda j: j["state"] == "running" and step(j) >= 1)
    kill_coordinator(first)
    # The coordinator died mid-job: the database still says running.
    with sqlite3.connect(f"file:{tmp_path / 'jobs.db'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone() == ("running",)
    wait_until(lambda: not worker_pids(tmp_path, job_id), 300, "the orphaned worker to finish")
    assert json.loads((tmp_path / "finished" / "run" / "status.json").read_text())["state"] == "succeeded"
    second = Coordinator(tmp_path)
    try:
        # Settled at once, or once the group's last process (MPI's helper daemon may outlive the
        # worker a moment) is gone: never relaunched.
        job = second.wait(job_id, lambda j: j["state"] != "running", timeout=60)
        assert job["state"] == "succeeded" and job["attempts"] == "1", job
        assert train_steps(tmp_path, "finished") == list(range(1, 201))
        assert not worker_pids(tmp_path, job_id)
    finally:
        second.stop()


def test_a_worker_killed_by_a_signal_is_retried_and_completes(tmp_path):
    c = Coordinator(tmp_path, extra=["--retry-backoff-ms", "200"])
    try:
        job_id = submit(c, tmp_path, "killed", **{"train.max_steps": "200", "train.save_steps": "4"})
        c.wait(job_id, lambda j: j["state"] == "running" and step(j) >= 6)
        for pid in worker_pids(tmp_path, job_id):
            os.kill(pid, signal.SIGKILL)
        job = c.wait(job_id, lambda j: j["state"] not in ("queued", "running"), timeout=300)
        assert job["state"] == "succeeded" and job["attempts"] == "2", job
        first, second = attempt_history(c, tmp_path, job_id)
        assert first.signal == 9 and first.exit_code == 128 + 9
        assert first.reason.startswith("killed by signal 9; retry 1 of 2"), first.reason
        assert second.reason == "" and second.exit_code == 0 and second.launch_id != first.launch_id
        log = (tmp_path / "jobs" / f"job-{job_id}" / "worker.log").read_text()
        assert "resumed from" in log, log
        assert set(train_steps(tmp_path, "killed")) == set(range(1, 201))
    finally:
        c.stop()


def test_a_diverged_job_is_not_retried(tmp_path):
    c = Coordinator(tmp_path, extra=["--retry-backoff-ms", "100"])
    try:
        job_id = submit(c, tmp_path, "nan", **{"train.learning_rate": "1e30",
                                               "train.max_consecutive_bad_steps": "1",
                                               "train.max_steps": "50"})
        job = c.wait(job_id, lambda j: j["state"] not in ("queued", "running"))
        assert job["state"] == "failed" and job["attempts"] == "1", job
        assert "non-finite" in job["error"], job
        (attempt,) = attempt_history(c, tmp_path, job_id)
        assert "non-finite" in attempt.reason and attempt.exit_code == 1
    finally:
        c.stop()


def test_sigterm_to_a_worker_group_requeues_it_as_interrupted_with_no_step_lost(tmp_path):
    c = Coordinator(tmp_path, extra=["--retry-backoff-ms", "60000"])  # a retry would wait a minute
    try:
        job_id = submit(c, tmp_path, "preempted", **{"train.max_steps": "200", "train.save_steps": "1000"})
        c.wait(job_id, lambda j: j["state"] == "running" and step(j) >= 5)
        (pid,) = worker_pids(tmp_path, job_id)
        os.killpg(os.getpgid(pid), signal.SIGTERM)  # as Slurm's --signal or a preemption would
        job = c.wait(job_id, lambda j: j["state"] not in ("queued", "running"), timeout=120)
        assert job["state"] == "succeeded" and job["attempts"] == "2", job
        first, _ = attempt_history(c, tmp_path, job_id)
        assert first.exit_code == 75 and first.reason.startswith("interrupted"), first
        assert train_steps(tmp_path, "preempted") == list(range(1, 201))  # checkpointed at the boundary
    finally:
        c.stop()


def test_cancel_right_after_launch_stops_the_job(tmp_path):
    c = Coordinator(tmp_path)
    try:
        job_id = submit(c, tmp_path, "cancelled", **LONG)
        c.wait(job_id, lambda j: j["state"] == "running", timeout=120)
        c.ctl("cancel", job_id)
        job = c.wait(job_id, lambda j: j["state"] != "running", timeout=60)
        assert job["state"] == "cancelled", job
        wait_until(lambda: not worker_pids(tmp_path, job_id), 30, "the cancelled worker to exit")
        (attempt,) = attempt_history(c, tmp_path, job_id)
        assert attempt.reason == "cancelled"
    finally:
        c.stop()


def test_one_rank_killed_under_mpirun_is_retried_and_completes(tmp_path):
    c = Coordinator(tmp_path, launcher=MPIRUN + ["-np", "2"], extra=["--retry-backoff-ms", "200"])
    try:
        job_id = submit(c, tmp_path, "ranks", **{"train.max_steps": "200", "train.save_steps": "4",
                                                 "train.per_device_train_batch_size": "2"})
        c.wait(job_id, lambda j: j["state"] == "running" and step(j) >= 6)
        ranks = [p for p in worker_pids(tmp_path, job_id)
                 if b"dpo-worker" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0]]
        assert len(ranks) == 2, ranks
        os.kill(max(ranks), signal.SIGKILL)
        job = c.wait(job_id, lambda j: j["state"] not in ("queued", "running"), timeout=300)
        assert job["state"] == "succeeded" and job["attempts"] == "2", job
        first, _ = attempt_history(c, tmp_path, job_id)
        assert "retry 1 of 2" in first.reason, first.reason
    finally:
        c.stop()
