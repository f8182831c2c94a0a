"""The command lines of the job service's programs: dpo-coordinator, dpoctl, dpo-prepare-job
(docs/cli.md). Strict numbers, flags in any position, generated --help, the exit statuses."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from cli_cases import (BINARY_DIR, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, SOURCE_DIR, TINY_SPEC, Case, check_case,
                       check_help_lists, run_case)
from coordinator_runs import COORDINATOR, DPOCTL, Coordinator
from worker_runs import spec

LOAD_BENCH = BINARY_DIR / "bench" / "service_load_bench"


COORDINATOR_OK = "stopped by SIGINT or SIGTERM, or the token command is done"
COORDINATOR_FAILED = ("the database, a TLS file or the address cannot be used, or a token command fails "
                      "(a name taken, no token to revoke)")
COORDINATOR_USAGE = "usage, including a --listen other than loopback without a user token and TLS"
SERVE = ("--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--db", "{tmp}/db", "--work-dir", "{tmp}/w")
DPOCTL_OK = "the call succeeded (watch: the job succeeded)"
DPOCTL_FAILED = "the call failed (its gRPC code on stderr), a file cannot be read, or the watched job did not succeed"
BENCH_OK = "no call failed (prints the JSON line)"
BENCH_FAILED = "a call failed (the first error on stderr), or a file cannot be read"
BENCH = ("--server", "127.0.0.1:1", "--ca-cert", "{tmp}/missing.pem", "--token", "t", "--method", "get")

CASES = [
    Case("bin/dpo-prepare-job", ("{tmp}/job.yaml",), EXIT_OK, files={"job.yaml": TINY_SPEC},
         when="the data sets are prepared"),
    Case("bin/dpo-prepare-job", ("{tmp}/missing.yaml",), EXIT_FAILURE, stderr_has="missing.yaml: cannot read",
         when="the spec or its data cannot be read or prepared (the reason, file:line, is the last line)"),
    Case("bin/dpo-prepare-job", (), EXIT_USAGE, stderr_has="JOB.yaml is required", when="usage"),
    Case("bin/dpo-prepare-job", ("a.yaml", "b.yaml"), EXIT_USAGE, stderr_has="not expected: b.yaml",
         when="usage"),

    # dpo-coordinator: serving is test_coordinator_serves_until_sigterm's.
    Case("bin/dpo-coordinator", ("token", "list", "--db", "{tmp}/db"), EXIT_OK, when=COORDINATOR_OK),
    Case("bin/dpo-coordinator", ("token", "revoke", "nobody", "--db", "{tmp}/db"), EXIT_FAILURE,
         stderr_has='token revoke: no token for "nobody"', when=COORDINATOR_FAILED),
    Case("bin/dpo-coordinator", ("token", "add", "..", "--db", "{tmp}/db"), EXIT_FAILURE,
         stderr_has="starting with a letter or digit", when=COORDINATOR_FAILED),
    Case("bin/dpo-coordinator", (*SERVE[:-4], "--db", "{tmp}/no/such/dir/db", "--work-dir", "{tmp}/w"), EXIT_FAILURE,
         stderr_has="cannot open the job database", when=COORDINATOR_FAILED),
    Case("bin/dpo-coordinator", (*SERVE, "--bogus"), EXIT_USAGE, stderr_has="not expected: --bogus",
         when=COORDINATOR_USAGE),
    Case("bin/dpo-coordinator", (*SERVE, "--slots", "2x"), EXIT_USAGE,
         stderr_has='--slots: expected an integer >= 1, got "2x"', when=COORDINATOR_USAGE),
    Case("bin/dpo-coordinator", (*SERVE, "--gpus-per-slot", "abc"), EXIT_USAGE,
         stderr_has='--gpus-per-slot: expected an integer >= 0, got "abc"', when=COORDINATOR_USAGE),
    Case("bin/dpo-coordinator", (*SERVE, "--max-rps-per-user", "nan"), EXIT_USAGE,
         stderr_has='--max-rps-per-user: expected a number >= 0, got "nan"', when=COORDINATOR_USAGE),
    Case("bin/dpo-coordinator", (*SERVE, "--gpu-memory-gib", "0"), EXIT_USAGE,
         stderr_has='--gpu-memory-gib: expected a number > 0, got "0"', when=COORDINATOR_USAGE),
    Case("bin/dpo-coordinator", (*SERVE, "--stop-grace-ms", "1e3"), EXIT_USAGE,
         stderr_has='--stop-grace-ms: expected an integer >= 0, got "1e3"', when=COORDINATOR_USAGE),
    Case("bin/dpo-coordinator", (*SERVE, "--slots"), EXIT_USAGE, stderr_has="--slots: 1 required INT",
         when=COORDINATOR_USAGE),
    Case("bin/dpo-coordinator", (*SERVE, "--tls-cert", "{tmp}/cert.pem"), EXIT_USAGE,
         stderr_has="--tls-cert requires --tls-key", when=COORDINATOR_USAGE),
    Case("bin/dpo-coordinator", (*SERVE[2:], "--listen", "0.0.0.0:0"), EXIT_USAGE,
         stderr_has="is not a loopback address", when=COORDINATOR_USAGE),
    Case("bin/dpo-coordinator", ("token",), EXIT_USAGE, stderr_has="A subcommand is required", when=COORDINATOR_USAGE),
    Case("bin/dpo-coordinator", ("token", "add", "--db", "{tmp}/db"), EXIT_USAGE, stderr_has="NAME is required",
         when=COORDINATOR_USAGE),
    Case("bin/dpo-coordinator", ("token", "list", "--admin", "--db", "{tmp}/db"), EXIT_USAGE,
         stderr_has="not expected: --admin", when=COORDINATOR_USAGE),
    Case("bin/dpo-coordinator", ("token", "list", "--slots", "2", "--db", "{tmp}/db"), EXIT_USAGE,
         stderr_has="token excludes --slots", when=COORDINATOR_USAGE),

    # dpoctl: its calls that succeed are test_dpoctl_options_after_the_command's.
    Case("bin/dpoctl", ("--help",), EXIT_OK, stdout_has="Exit status:", when=DPOCTL_OK),
    Case("bin/dpoctl", ("list", "--token-file", "{tmp}/missing"), EXIT_FAILURE,
         stderr_has="missing: cannot read the token file", when=DPOCTL_FAILED),
    Case("bin/dpoctl", ("--server", "127.0.0.1:1", "get", "1"), EXIT_FAILURE, stderr_has="dpoctl: UNAVAILABLE: ",
         when=DPOCTL_FAILED),
    Case("bin/dpoctl", ("--server", "127.0.0.1:1", "submit", "{tmp}/missing.yaml"), EXIT_FAILURE,
         stderr_has="missing.yaml: cannot open", when=DPOCTL_FAILED),
    Case("bin/dpoctl", ("--bogus", "list"), EXIT_USAGE, stderr_has="not expected: --bogus", when="usage"),
    Case("bin/dpoctl", ("get", "2x"), EXIT_USAGE, stderr_has='ID: expected an integer >= 1, got "2x"',
         when="usage"),
    Case("bin/dpoctl", ("cancel", "0"), EXIT_USAGE, stderr_has='ID: expected an integer >= 1, got "0"',
         when="usage"),
    Case("bin/dpoctl", ("list", "--limit", "abc"), EXIT_USAGE, stderr_has='--limit: expected an integer >= 1',
         when="usage"),
    Case("bin/dpoctl", ("list", "--limit=0"), EXIT_USAGE, stderr_has='--limit: expected an integer >= 1, got "0"',
         when="usage"),
    Case("bin/dpoctl", (), EXIT_USAGE, stderr_has="A subcommand is required", when="usage"),
    Case("bin/dpoctl", ("watch",), EXIT_USAGE, stderr_has="ID is required", when="usage"),
    Case("bin/dpoctl", ("submit", "--name", "n"), EXIT_USAGE, stderr_has="JOB.yaml is required", when="usage"),
    Case("bin/dpoctl", ("logs", "1", "2"), EXIT_USAGE, stderr_has="not expected: 2", when="usage"),

    # service_load_bench: a real run is test_service_load_bench_runs's.
    Case("bench/service_load_bench", ("--help",), EXIT_OK, stdout_has="Exit status:", when=BENCH_OK),
    Case("bench/service_load_bench", BENCH, EXIT_FAILURE, stderr_has="missing.pem: cannot open", when=BENCH_FAILED),
    Case("bench/service_load_bench", (*BENCH, "--bogus"), EXIT_USAGE, stderr_has="not expected: --bogus",
         when="usage"),
    Case("bench/service_load_bench", (*BENCH, "--clients", "2x"), EXIT_USAGE,
         stderr_has='--clients: expected an integer >= 1, got "2x"', when="usage"),
    Case("bench/service_load_bench", (*BENCH, "--seconds", "inf"), EXIT_USAGE,
         stderr_has='--seconds: expected a number > 0, got "inf"', when="usage"),
    Case("bench/service_load_bench", (*BENCH[:-2], "--method", "put"), EXIT_USAGE,
         stderr_has="--method: put not in {get,list,submit}", when="usage"),
    Case("bench/service_load_bench", BENCH[2:], EXIT_USAGE, stderr_has="--server is required", when="usage"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}-{c.exit}-{'-'.join(c.args)[:40]}")
def test_case(case: Case, tmp_path):
    check_case(case, tmp_path)


def test_prepare_job_help(tmp_path):
    check_help_lists("bin/dpo-prepare-job", ["JOB.yaml"], tmp_path)


def test_coordinator_help(tmp_path):
    check_help_lists("bin/dpo-coordinator", [
        "--listen", "--db", "--work-dir", "--metrics-listen", "--tls-cert", "--tls-key", "--require-auth",
        "--read-root", "--write-root", "--max-queued-per-user", "--max-rps-per-user", "--worker", "--launcher",
        "--slots", "--gpus-per-slot", "--ranks-per-group", "--gpu-memory-gib", "--max-retries",
        "--retry-backoff-ms", "--prepare-timeout-ms", "--stop-grace-ms", "token"], tmp_path)
    token_help = subprocess.run([COORDINATOR, "token", "add", "--help"], capture_output=True, text=True, timeout=60)
    assert token_help.returncode == EXIT_OK and "NAME" in token_help.stdout and "--admin" in token_help.stdout


def test_dpoctl_help(tmp_path):
    check_help_lists("bin/dpoctl", ["--server", "--ca-cert", "--token-file", "submit", "get", "list", "cancel",
                                    "watch", "logs", "DPO_COORDINATOR"], tmp_path)
    list_help = subprocess.run([DPOCTL, "list", "--help"], capture_output=True, text=True, timeout=60)
    assert list_help.returncode == EXIT_OK and "--limit" in list_help.stdout


def test_service_load_bench_help(tmp_path):
    check_help_lists("bench/service_load_bench", ["--server", "--ca-cert", "--token", "--method", "--clients",
                                                  "--seconds", "--jobs", "--spec", "--rate"], tmp_path)


def test_coordinator_serves_until_sigterm(tmp_path):
    # Flags in another order than the usual, in both spellings, a repeated one taking its last
    # value (else 0.0.0.0 would be refused); SIGTERM is a clean stop.
    proc = subprocess.Popen([COORDINATOR, "--listen", "0.0.0.0:0", f"--work-dir={tmp_path / 'w'}", "--slots=2",
                             "--metrics-listen", "127.0.0.1:0", f"--db={tmp_path / 'db'}", "--listen=127.0.0.1:0",
                             "--read-root", tmp_path, "--read-root", SOURCE_DIR],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert re.search(r"grpc port \d+, metrics port \d+", proc.stdout.readline()), proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == EXIT_OK, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_coordinator_token_commands_take_flags_anywhere(tmp_path):
    def token(*args):
        return run_case(Case("bin/dpo-coordinator", args, EXIT_OK), tmp_path, timeout=60)

    assert token("token", "add", "--admin", "root", f"--db={tmp_path / 'db'}").returncode == EXIT_OK
    # A user may be named like a command.
    assert token("--db", str(tmp_path / "db"), "token", "add", "list").returncode == EXIT_OK
    listing = token("token", "--db", str(tmp_path / "db"), "list")
    assert listing.returncode == EXIT_OK and listing.stdout.splitlines() == ["list", "root admin"], listing
    assert token("token", "revoke", f"--db={tmp_path / 'db'}", "list").returncode == EXIT_OK
    assert token("token", "list", "--db", str(tmp_path / "db")).stdout.splitlines() == ["root admin"]


def test_dpoctl_options_after_the_command(tmp_path):
    sleeper = tmp_path / "sleeper.sh"  # the job never trains: the test is about dpoctl
    sleeper.write_text("#!/bin/sh\nexec sleep 600\n")
    sleeper.chmod(0o755)
    job = tmp_path / "job.yaml"
    job.write_text(spec(tmp_path / "out"))
    c = Coordinator(tmp_path, launcher=[str(sleeper)])
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("DPO_TOKEN", "DPO_COORDINATOR")}
        env["HOME"] = str(tmp_path)  # no ~/.config/dpo/token of the real user

        def ctl(*args):
            return subprocess.run([DPOCTL, *map(str, args)], capture_output=True, text=True, timeout=60, env=env)

        submitted = ctl("submit", "--name", "late-options", job, f"--server={c.server}")
        assert submitted.returncode == EXIT_OK, submitted.stderr
        job_id = submitted.stdout.strip()
        got = ctl("get", job_id, "--server", c.server)
        assert got.returncode == EXIT_OK and "name: late-options" in got.stdout, got
        listing = ctl("list", "--server", c.server, "--limit=1")
        assert listing.returncode == EXIT_OK and re.search(rf"^{job_id}\s+\S+\s+\S+\s+late-options$",
                                                           listing.stdout, re.M), listing
        assert ctl("cancel", "--server", c.server, job_id).returncode == EXIT_OK
        missing = ctl("get", "999", f"--server={c.server}")
        assert missing.returncode == EXIT_FAILURE and "NOT_FOUND" in missing.stderr, missing
    finally:
        c.stop()


@pytest.mark.skipif(not LOAD_BENCH.exists(), reason="built without gRPC (no service_load_bench)")
def test_service_load_bench_runs(tmp_path):
    # The driver's whole invocation of the client, on a small table for a moment.
    proc = subprocess.run([sys.executable, SOURCE_DIR / "bench" / "service_load_bench.py", "--build", BINARY_DIR,
                           "--clients", "2", "--seconds", "0.4", "--jobs", "20", "--rate", "50"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| GetJob | paced at 50/s |" in proc.stdout and "| SubmitJob |" in proc.stdout, proc.stdout


def test_service_load_bench_takes_flags_anywhere(tmp_path):
    proc = run_case(Case("bench/service_load_bench", ("--method=list", "--token", "t", f"--ca-cert={tmp_path}/none",
                                                      "--clients=3", "--server", "127.0.0.1:1"), EXIT_FAILURE),
                    tmp_path)
    assert proc.returncode == EXIT_FAILURE and "none: cannot open" in proc.stderr, proc.stderr
