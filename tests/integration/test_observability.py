"""Observability with the real tools: Debian's Prometheus scrapes a coordinator that runs a
2-rank mpirun job, with the shipped deploy/prometheus.yml, and the job's series, and each rank's
own series, come back through Prometheus's HTTP query API; every query of the shipped Grafana
dashboard finds series there; promtool finds nothing to complain about in our /metrics."""
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from coordinator_runs import Coordinator, skip_without_coordinator, submit
from worker_runs import MPIRUN, SOURCE_DIR

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
# The shipped scrape config targets the coordinator's default metrics port.
SHIPPED_TARGET_PORT = 9464
# Every job runs as a 2-rank group, so that per-rank series exist for two ranks, and the
# gradient all-reduce (whose hidden share is one of them) has something to do.
TWO_RANKS = MPIRUN + ["-np", "2"]
# Each rank's own families (worker/train/rank_metrics.h, docs/worker_status.md).
RANK_FAMILIES = ["dpo_rank_global_step", "dpo_rank_step_seconds", "dpo_rank_tokens_per_second",
                 "dpo_rank_comm_seconds", "dpo_rank_comm_hidden_ratio", "dpo_rank_peak_memory_bytes",
                 "dpo_rank_skipped_steps_total"]

pytestmark = [skip_without_coordinator,
              pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None,
                                 reason="prometheus is installed by scripts/setup.sh")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _submit_long_job(coordinator, tmp_path) -> int:
    """A job that runs until cancelled, logging every step; returns once it has done a step."""
    job_id = submit(coordinator, tmp_path, "long", **{"train.max_steps": "100000",
                                                        "train.save_steps": "100000",
                                                        "train.logging_steps": "1",
                                                        "train.per_device_train_batch_size": "2"})
    coordinator.wait(job_id, lambda j: j["state"] == "running" and j.get("step", "0/").split("/")[0] not in ("", "0"))
    return job_id


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class Prometheus:
    def __init__(self, root):
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={SOURCE_DIR / 'deploy' / 'prometheus.yml'}",
             f"--storage.tsdb.path={root / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.3)

    def query(self, expr: str) -> list:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = _get_json(url)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 120, series: int = 1) -> list:
        """The result of `expr` once it holds at least `series` series."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if len(result) >= series:
                return result
            time.sleep(1)
        raise AssertionError(f"prometheus holds fewer than {series} series for {expr}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def test_prometheus_scrapes_the_job_and_every_dashboard_query_finds_series(tmp_path):
    coordinator = Coordinator(tmp_path, launcher=TWO_RANKS,
                              extra=("--metrics-listen", f"127.0.0.1:{SHIPPED_TARGET_PORT}"))
    prometheus = None
    try:
        # Long enough to be running through two 15 s scrape intervals; cancelled at the end.
        job_id = _submit_long_job(coordinator, tmp_path)
        prometheus = Prometheus(tmp_path)
        # Our job label is job_id: Prometheus's own `job` label names the scrape job.
        loss = prometheus.wait_for(f'dpo_train_loss{{job_id="{job_id}",job="dpo-coordinator"}}')
        assert 0 < float(loss[0]["value"][1]) < 10
        step = prometheus.wait_for(f'dpo_train_global_step{{job_id="{job_id}"}}')
        assert float(step[0]["value"][1]) >= 1
        # Each rank's own series, for both ranks, with values that make sense for a CPU job.
        for family in RANK_FAMILIES:
            series = prometheus.wait_for(f'{family}{{job_id="{job_id}",job="dpo-coordinator"}}', series=2)
            values = {s["metric"]["rank"]: float(s["value"][1]) for s in series}
            assert sorted(values) == ["0", "1"], (family, series)
            for rank, value in values.items():
                if family == "dpo_rank_comm_hidden_ratio":
                    assert 0 <= value <= 1, (family, rank, value)
                elif family == "dpo_rank_skipped_steps_total":
                    assert value == 0, (family, rank, value)
                elif family == "dpo_rank_peak_memory_bytes":
                    assert value > 10 * 2**20, (family, rank, value)  # a process with torch loaded
                else:
                    assert value > 0, (family, rank, value)
        # A step's all-reduce takes part of the step, never more.
        for rank in ("0", "1"):
            comm = prometheus.query(f'dpo_rank_comm_seconds{{job_id="{job_id}",rank="{rank}"}}')
            step_time = prometheus.query(f'dpo_rank_step_seconds{{job_id="{job_id}",rank="{rank}"}}')
            assert float(comm[0]["value"][1]) < float(step_time[0]["value"][1]), (comm, step_time)
        # Every query of the shipped dashboard, against what Prometheus holds (not our names).
        dashboard = json.loads((SOURCE_DIR / "deploy" / "grafana" / "dpo_training.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        assert exprs
        for family in RANK_FAMILIES:  # each rank family has its panel
            assert any(family in expr for expr in exprs), family
        for expr in exprs:
            assert prometheus.wait_for(expr, timeout=60), expr
        coordinator.ctl("cancel", job_id)
    finally:
        if prometheus:
            prometheus.stop()
        coordinator.stop()


def test_promtool_finds_nothing_to_fix_in_metrics(tmp_path):
    coordinator = Coordinator(tmp_path, launcher=TWO_RANKS)
    try:
        job_id = _submit_long_job(coordinator, tmp_path)
        # The ranks' files are read every few seconds: wait until both ranks' series are served.
        deadline = time.monotonic() + 60
        while True:
            text = coordinator.scrape()
            ranks = set(re.findall(rf'^dpo_rank_comm_hidden_ratio\{{job_id="{job_id}",name="[^"]*",rank="(\d+)"\}} ', text, re.M))
            if ranks == {"0", "1"}:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.5)
        assert "dpo_train_loss{" in text  # the running job's series are in it
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0 and check.stdout.strip() == "" and check.stderr.strip() == "", (
            check.stdout + check.stderr)
        families = {m for m in re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)}
        assert set(RANK_FAMILIES) <= families
        for family in families:
            assert re.search(rf"^# HELP {family} \S", text, re.M), family
            kind = "counter" if family.endswith("_total") else "gauge"
            assert re.search(rf"^# TYPE {family} {kind}$", text, re.M), family
        coordinator.ctl("cancel", job_id)
    finally:
        coordinator.stop()
