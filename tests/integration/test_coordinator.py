"""dpo-coordinator and dpoctl end to end: a real gRPC server, a real SQLite file, real worker
processes (and mpirun ranks), and real HTTP scrapes of /metrics."""
import json
import re
import subprocess

import pytest

from coordinator_runs import Coordinator, skip_without_coordinator, submit, worker_environment
from worker_runs import EXAMPLES, MPIRUN, SOURCE_DIR, WORKER, spec

pytestmark = skip_without_coordinator


@pytest.fixture
def coordinator(tmp_path):
    c = Coordinator(tmp_path)
    yield c
    c.stop()


def test_submitted_job_runs_to_success_and_is_scraped(coordinator, tmp_path):
    job_id = submit(coordinator, tmp_path, "small", **{"train.max_steps": "3"})
    watch = coordinator.ctl("watch", job_id)  # exits 0 only if the job succeeded
    assert "succeeded" in watch.stdout
    job = coordinator.job(job_id)
    assert job["state"] == "succeeded" and job["step"] == "3/3" and job["exit_code"] == "0"
    assert float(job["loss"]) > 0
    lines = [json.loads(l) for l in (tmp_path / "small" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(l["step"] for l in lines) == 3
    assert re.search(r'^dpo_jobs\{state="succeeded"\} 1$', coordinator.scrape(), re.M)
    # The coordinator tokenized the data before launching; the worker mapped its file.
    assert job["data_prepared"] == "yes"
    log = coordinator.ctl("logs", job_id).stdout  # the worker's output, over the RPC
    assert log == (tmp_path / "jobs" / f"job-{job_id}" / "worker.log").read_text()
    assert "reused" in log and "prepared " not in log and "done: 3 steps" in log, log
    listing = coordinator.ctl("list").stdout
    assert re.search(rf"^{job_id}\s+succeeded\s+3/3\s", listing, re.M), listing


def test_bad_spec_is_rejected_with_every_problem_named(coordinator, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(spec(tmp_path / "bad", **{"train.learning_rate": "-1", "train.max_stpes": "3"}))
    proc = coordinator.ctl("submit", path, check=False)
    assert proc.returncode == 1
    assert "INVALID_ARGUMENT" in proc.stderr
    assert "train.learning_rate: must be > 0" in proc.stderr
    assert 'did you mean "max_steps"' in proc.stderr or "max_steps" in proc.stderr
    assert re.search(r"bad\.yaml:\d+", proc.stderr), proc.stderr  # file:line
    assert coordinator.ctl("list").stdout.count("\n") == 1  # header only: nothing was queued
    for command in ("get", "logs", "cancel"):
        missing = coordinator.ctl(command, 999, check=False)
        assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr, command


def test_bad_data_fails_the_job_before_any_worker_starts(coordinator, tmp_path):
    # Valid spec, broken data: the coordinator's preparation finds it (file:line), and no worker
    # group is ever launched for the job.
    data = tmp_path / "broken.jsonl"
    data.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": \n')
    job_id = submit(coordinator, tmp_path, "broken", **{"data.train": f'"{data}"'})
    watch = coordinator.ctl("watch", job_id, check=False)
    assert watch.returncode == 1
    job = coordinator.job(job_id)
    assert job["state"] == "failed" and job["attempts"] == "0" and job["data_prepared"] == "no"
    assert job["error"].startswith("data preparation: ") and f"{data}:2" in job["error"], job
    assert not (tmp_path / "jobs" / f"job-{job_id}").exists()
    assert re.search(r'^dpo_jobs\{state="failed"\} 1$', coordinator.scrape(), re.M)


def test_failed_worker_carries_its_one_line_reason(coordinator, tmp_path):
    # Data and spec are fine; the run itself fails (every step non-finite): the worker's one-line
    # reason becomes the job's error.
    job_id = submit(coordinator, tmp_path, "nan", **{"train.learning_rate": "1e30",
                                                      "train.max_consecutive_bad_steps": "1",
                                                      "train.max_steps": "50"})
    assert coordinator.ctl("watch", job_id, check=False).returncode == 1
    job = coordinator.job(job_id)
    assert job["state"] == "failed" and job["exit_code"] == "1" and job["attempts"] == "1"
    assert "non-finite" in job["error"], job


def test_job_that_does_not_fit_the_gpus_is_refused_at_submission(tmp_path):
    # No worker ever runs here: accepted jobs fail to start, refused ones are never queued.
    c = Coordinator(tmp_path, worker=tmp_path / "no-such-dpo-worker",
                    extra=["--gpu-memory-gib", "0.001", "--ranks-per-group", "2"])
    try:
        refused = c.ctl("submit", EXAMPLES / "job.yaml", check=False)
        assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr, refused.stderr
        message = refused.stderr
        assert "train.sharding: none needs" in message and "per rank on 2 rank(s)" in message, message
        for part in ("parameters", "gradients", "optimizer", "reference", "activations"):
            assert re.search(rf"{part} \d+\.\d\d", message), (part, message)
        assert "a device has 0.001 GiB" in message and "no mode fits" in message, message
        assert c.ctl("list").stdout.count("\n") == 1  # header only: nothing was queued

        # The refusal's figures are dpo-worker --plan's for the same spec and ranks.
        path = tmp_path / "large.yaml"
        path.write_text(spec(tmp_path / "large", **{"train.sharding": "full", "train.bf16": "true",
                                                     "data.max_length": "4096"}))
        refused = c.ctl("submit", path, check=False)
        assert "INVALID_ARGUMENT" in refused.stderr and "train.sharding: full needs" in refused.stderr
        plan = subprocess.run([str(WORKER), "--plan", str(path), "--ranks", "2", "--gpu-memory", "0.001"],
                              capture_output=True, text=True, timeout=60)
        assert plan.returncode == 0, plan.stderr
        assert "2 CPU rank(s), bf16 on" in plan.stdout, plan.stdout
        total = re.search(r"^total\s+\S+\s+\S+\s+(\S+)$", plan.stdout, re.M)[1]
        assert f"full needs {total} GiB per rank" in refused.stderr, (plan.stdout, refused.stderr)
        assert plan.stdout.count("does not fit in 0.001 GiB per device") == 3, plan.stdout
        for flag, value in (("--ranks", "2x"), ("--ranks", "0"), ("--gpu-memory", "-1")):
            args = {"--ranks": "2", "--gpu-memory": "80", flag: value}
            bad = subprocess.run([str(WORKER), "--plan", str(path), *sum(args.items(), ())],
                                 capture_output=True, text=True, timeout=60)
            assert bad.returncode == 2 and f'{flag}: expected' in bad.stderr, (flag, value, bad.stderr)

        # A model config that cannot be read is no reason to refuse: the worker reports it later.
        accepted = submit(c, tmp_path, "unreadable",
                          **{"model.random": '{config: "/nonexistent/config.json", seed: 7}'})
        assert c.job(accepted)["state"] in ("queued", "running", "failed")
    finally:
        c.stop()
    # Without --gpu-memory-gib the same spec is accepted (no check on CPU clusters).
    (tmp_path / "plain").mkdir()
    plain = Coordinator(tmp_path / "plain", worker=tmp_path / "no-such-dpo-worker")
    try:
        assert submit(plain, tmp_path, "large", **{"train.sharding": "full"}) > 0
    finally:
        plain.stop()


def test_worker_that_cannot_start_fails_the_job(tmp_path):
    c = Coordinator(tmp_path, worker=tmp_path / "no-such-dpo-worker")
    try:
        job_id = submit(c, tmp_path, "nowhere")
        job = c.wait(job_id, lambda j: j["state"] != "queued" and j["state"] != "running")
        assert job["state"] == "failed"
        assert "no-such-dpo-worker" in job["error"] and "cannot start" in job["error"], job
    finally:
        c.stop()


def test_running_job_reports_progress_then_is_cancelled(coordinator, tmp_path):
    job_id = submit(coordinator, tmp_path, "long", **{"train.max_steps": "100000",
                                                        "train.save_steps": "100000"})
    coordinator.wait(job_id, lambda j: j["state"] == "running" and int(j["step"].split("/")[0]) >= 2)
    text = coordinator.scrape()
    assert re.search(rf'^dpo_train_loss\{{job_id="{job_id}",name="[^"]*long.yaml"\}} [0-9.e+-]+$', text, re.M), text
    assert re.search(rf'^dpo_train_tokens_per_second\{{job_id="{job_id}"', text, re.M)
    assert re.search(r'^dpo_jobs\{state="running"\} 1$', text, re.M)
    # Every job-level series the shipped Grafana dashboard plots is one the coordinator serves
    # (its per-rank panels need a multi-rank job: test_observability.py checks those; a row has
    # no targets).
    dashboard = json.loads((SOURCE_DIR / "deploy" / "grafana" / "dpo_training.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in re.findall(r"dpo_\w+", target["expr"]):
                if not name.startswith("dpo_rank_"):
                    assert re.search(rf"^{name}\{{", text, re.M), (panel["title"], name)
    # A second job into the same output directory is refused while this one runs.
    clash = tmp_path / "clash.yaml"
    clash.write_text(spec(tmp_path / "long"))
    refused = coordinator.ctl("submit", clash, check=False)
    assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stderr
    coordinator.ctl("cancel", job_id)
    job = coordinator.wait(job_id, lambda j: j["state"] != "running", timeout=60)
    assert job["state"] == "cancelled" and job["exit_code"] == "75"  # it checkpointed on SIGTERM
    again = coordinator.ctl("cancel", job_id, check=False)
    assert again.returncode == 1 and "FAILED_PRECONDITION" in again.stderr


def test_restart_keeps_jobs_and_resumes_the_interrupted_one(tmp_path):
    # Time enough for the group to checkpoint and exit with the coordinator, however loaded the
    # machine: otherwise it is left running and the next coordinator adopts it (not a relaunch).
    first = Coordinator(tmp_path, extra=["--stop-grace-ms", "120000"])
    # Enough steps that the job is still running when the first coordinator stops (an idle
    # machine does 60 of them in under a second); SIGTERM makes the worker checkpoint anyway.
    job_id = submit(first, tmp_path, "resumable", **{"train.max_steps": "1000", "train.save_steps": "100"})
    first.wait(job_id, lambda j: int(j["step"].split("/")[0]) >= 4)
    first.stop()  # SIGTERM: the worker is stopped with it, the job stays recorded as running
    second = Coordinator(tmp_path)
    try:
        assert second.ctl("watch", job_id).returncode == 0
        job = second.job(job_id)
        assert job["state"] == "succeeded" and job["attempts"] == "2" and job["step"] == "1000/1000"
        log = (tmp_path / "jobs" / f"job-{job_id}" / "worker.log").read_text()
        assert "resumed from" in log, log
    finally:
        second.stop()


def test_launcher_runs_each_job_as_an_mpirun_worker_group(tmp_path):
    c = Coordinator(tmp_path, launcher=MPIRUN + ["-np", "2"])
    try:
        job_id = submit(c, tmp_path, "ranks", **{"train.max_steps": "2",
                                                 "train.per_device_train_batch_size": "2"})
        assert c.ctl("watch", job_id).returncode == 0
        # Each logged step covers both ranks: 2 pairs per rank.
        lines = [json.loads(l) for l in (tmp_path / "ranks" / "run" / "metrics.jsonl").read_text().splitlines()]
        train = [l for l in lines if l["split"] == "train"]
        assert len(train) == 2
    finally:
        c.stop()


def test_slots_run_groups_side_by_side_each_on_its_own_gpus(tmp_path):
    c = Coordinator(tmp_path, extra=["--slots", "2", "--gpus-per-slot", "2"])
    try:
        long = {"train.max_steps": "100000", "train.save_steps": "100000"}
        first, second, third = (submit(c, tmp_path, f"slot{i}", **long) for i in range(3))
        for job_id in (first, second):
            c.wait(job_id, lambda j: j["state"] == "running")
        assert c.job(third)["state"] == "queued"  # both groups are busy
        devices = {worker_environment(tmp_path, j)["CUDA_VISIBLE_DEVICES"] for j in (first, second)}
        assert devices == {"0,1", "2,3"}
        freed = worker_environment(tmp_path, first)["CUDA_VISIBLE_DEVICES"]
        c.ctl("cancel", first)
        c.wait(third, lambda j: j["state"] == "running")
        assert worker_environment(tmp_path, third)["CUDA_VISIBLE_DEVICES"] == freed
        for job_id in (second, third):
            c.ctl("cancel", job_id)
            c.wait(job_id, lambda j: j["state"] == "cancelled", timeout=60)
    finally:
        c.stop()
