"""A real dpo-coordinator for the integration tests: started on free loopback ports with its
database and work folder in a test's folder, driven through dpoctl. Shared by test_coordinator.py
and test_job_lifecycle.py."""
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from worker_runs import BINARY_DIR, SOURCE_DIR, spec

COORDINATOR = BINARY_DIR / "bin" / "dpo-coordinator"
DPOCTL = BINARY_DIR / "bin" / "dpoctl"

skip_without_coordinator = pytest.mark.skipif(not COORDINATOR.exists(),
                                      reason="built without gRPC/SQLite/civetweb (no coordinator)")


class Coordinator:
    """One dpo-coordinator process on free ports, with its database and work folder in `root`."""

    def __init__(self, root, launcher=None, worker=None, extra=()):
        self.root = root
        cmd = [str(COORDINATOR), "--listen", "127.0.0.1:0", "--db", str(root / "jobs.db"),
               "--work-dir", str(root / "jobs"), "--metrics-listen", "127.0.0.1:0"]
        if launcher:
            cmd += ["--launcher", " ".join(launcher)]
        if worker:
            cmd += ["--worker", str(worker)]
        cmd += list(extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        banner = self.proc.stdout.readline()
        match = re.search(r"grpc port (\d+), metrics port (\d+)", banner)
        assert match, f"no banner: {banner!r} {self.proc.stderr.read() if self.proc.poll() is not None else ''}"
        self.server = f"127.0.0.1:{match[1]}"
        self.metrics_url = f"http://127.0.0.1:{match[2]}/metrics"

    def ctl(self, *args, check=True, token=None, options=(), timeout=600):
        """dpoctl with `token` in DPO_TOKEN (none by default) and `options` before the command;
        HOME is the test's folder, so no ~/.config/dpo/token of the real user counts."""
        env = {k: v for k, v in os.environ.items() if k != "DPO_TOKEN"}
        env["HOME"] = str(self.root)
        if token:
            env["DPO_TOKEN"] = token
        proc = subprocess.run([str(DPOCTL), "--server", self.server, *map(str, options), *map(str, args)],
                              capture_output=True, env=env, timeout=timeout)
        proc.stdout, proc.stderr = (proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        if check and proc.returncode != 0:
            raise AssertionError(f"dpoctl {args} exited {proc.returncode}: {proc.stderr}")
        return proc

    def job(self, job_id):
        """dpoctl get, as a dict of its 'key: value' lines."""
        out = self.ctl("get", job_id).stdout
        return dict(line.strip().split(": ", 1) for line in out.splitlines() if ": " in line)

    def wait(self, job_id, until, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.job(job_id)
            if until(job):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} never reached the condition: {job}")

    def scrape(self):
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return response.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.proc.stdout.close()
        self.proc.stderr.close()


def add_token(root, name, admin=False):
    """`dpo-coordinator token add` on the database of a Coordinator in `root`: the new token."""
    cmd = [str(COORDINATOR), "token", "add", name, "--db", str(root / "jobs.db")] + (["--admin"] if admin else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout.strip()


def submit(c, tmp_path, name, **overrides):
    path = tmp_path / f"{name}.yaml"
    path.write_text(spec(tmp_path / name, **overrides))
    return int(c.ctl("submit", path).stdout.strip())


def worker_environment(root, job_id):
    """The environment of the running worker of job `job_id` of the coordinator in `root`, read
    from /proc (a real process; the full path, since other tests may run their own job 1)."""
    marker = str(root / "jobs" / f"job-{job_id}" / "job.yaml").encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes():
                entries = (proc / "environ").read_bytes().split(b"\0")
                return dict(e.decode().split("=", 1) for e in entries if b"=" in e)
        except OSError:
            continue  # exited meanwhile
    raise AssertionError(f"no worker process for job {job_id}")


def generate_stubs(out_dir):
    """dpo.v1.JobService's Python modules, generated from proto/ into `out_dir` (which a client
    process can then put on PYTHONPATH). Returns (messages, services)."""
    import importlib
    import sys

    from grpc_tools import protoc

    proto_root = SOURCE_DIR / "proto"
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    rc = protoc.main(["protoc", f"-I{proto_root}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
                      str(proto_root / "dpo" / "v1" / "job_service.proto")])
    assert rc == 0, "protoc failed"
    sys.path.insert(0, str(out_dir))
    try:
        messages = importlib.import_module("dpo.v1.job_service_pb2")
        services = importlib.import_module("dpo.v1.job_service_pb2_grpc")
    finally:
        sys.path.remove(str(out_dir))
    return messages, services


def job_service(server, out_dir):
    """A grpcio stub of dpo.v1.JobService on `server` (generate_stubs into `out_dir`).
    Returns (stub, messages module)."""
    import grpc

    messages, services = generate_stubs(out_dir)
    return services.JobServiceStub(grpc.insecure_channel(server)), messages
