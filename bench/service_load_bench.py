"""Load on the job service (issue 9, point 12): 64 concurrent authenticated clients over TLS
against a dpo-coordinator whose table holds 10,000 jobs; reports the sustained rate and p50/p99
latency of GetJob, paged ListJobs and SubmitJob (build/bench/service_load_bench does the calls).

    .venv/bin/python bench/service_load_bench.py [--build build] [--clients 64] [--seconds 10]

The 10,000 jobs are written into the coordinator's SQLite file while it is stopped (finished
jobs of one user, each with a resolved spec like a real one); submitted jobs queue behind a
launcher that never starts a worker, so nothing trains while the service is measured. The
clients use one admin token; the per-user rate and queue limits are off for the run.

On a machine shared with other work, run it under `chrt -f 10` (as root): the coordinator and the
clients inherit the real-time policy, so other processes' compilers cannot take the cores in the
middle of a call; the output says which policy it ran under."""
import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SOURCE_DIR / "tests" / "integration"))
from worker_runs import spec  # noqa: E402


def start(coordinator, root, extra=()):
    proc = subprocess.Popen([coordinator, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                             "--db", root / "jobs.db", "--work-dir", root / "jobs", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    match = re.search(r"grpc port (\d+)", proc.stdout.readline())
    assert match, proc.stderr.read()
    return proc, f"127.0.0.1:{match[1]}"


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=str(SOURCE_DIR / "build"))
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=5000, help="GetJob calls/s of the paced run")
    args = parser.parse_args()
    build = Path(args.build)
    coordinator, client = build / "bin" / "dpo-coordinator", build / "bench" / "service_load_bench"

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cert, key = root / "cert.pem", root / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        token = subprocess.run([coordinator, "token", "add", "bench", "--admin", "--db", root / "jobs.db"],
                               check=True, capture_output=True, text=True).stdout.strip()
        proc, _ = start(coordinator, root)  # creates the schema
        stop(proc)
        now = int(time.time() * 1000)
        rows = [(f"job-{i}", "succeeded", spec(root / "out" / f"j{i}"), str(root / "out" / f"j{i}" / "run"),
                 now, now, now, "bench") for i in range(args.jobs)]
        with sqlite3.connect(root / "jobs.db") as db:
            db.executemany("INSERT INTO jobs (name, state, spec_yaml, output_dir, submitted_ms, started_ms,"
                           " finished_ms, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        sleeper = root / "sleeper.sh"
        sleeper.write_text("#!/bin/sh\nexec sleep 600\n")
        sleeper.chmod(0o755)
        template = root / "submit.yaml"
        template.write_text(spec(root / "out" / "s@N@", **{"data.prepared_dir": f'"{root / "prepared"}"'}))
        proc, server = start(coordinator, root, ["--tls-cert", cert, "--tls-key", key, "--launcher", sleeper,
                                                 "--max-rps-per-user", "0", "--max-queued-per-user", "1000000"])
        results = []
        try:
            runs = (("get", args.seconds, []), ("get", args.seconds, ["--rate", str(args.rate)]),
                    ("list", args.seconds / 2, []), ("submit", args.seconds / 2, []))
            for method, seconds, pacing in runs:
                out = subprocess.run([client, "--server", server, "--ca-cert", cert, "--token", token,
                                      "--method", method, "--clients", str(args.clients), "--seconds", str(seconds),
                                      "--jobs", str(args.jobs), "--spec", template, *pacing],
                                     capture_output=True, text=True, timeout=600)
                assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
                results.append(json.loads(out.stdout))
        finally:
            stop(proc)
    policy = {os.SCHED_OTHER: "normal", os.SCHED_FIFO: "real-time FIFO (chrt -f)"}.get(os.sched_getscheduler(0), "other")
    print(f"{args.clients} TLS clients, {args.jobs} jobs in the table, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end, scheduling {policy}")
    print("| call | load | calls/s | p50 ms | p99 ms |\n|------|------|--------:|-------:|-------:|")
    names = {"get": "GetJob", "list": "ListJobs (pages of 50)", "submit": "SubmitJob"}
    for r in results:
        load = f"paced at {args.rate:.0f}/s" if r["paced"] else "back to back"
        print(f"| {names[r['method']]} | {load} | {r['per_second']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")


if __name__ == "__main__":
    main()
