"""The job service as a shared cluster would run it (issue 9): users with tokens, jobs that belong
to them, spec paths confined to roots, requests that cannot wedge or flood it, TLS, health
checking, WatchJob and the Python client. Real dpo-coordinator and dpoctl processes on loopback."""
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import grpc
import pytest

from coordinator_runs import (COORDINATOR, DPOCTL, Coordinator, add_token, generate_stubs,
                              skip_without_coordinator)
from worker_runs import EXAMPLES, SOURCE_DIR, spec

pytestmark = skip_without_coordinator


def sleeper(root):
    """A launcher under which a job runs until it is stopped, without ever starting a worker."""
    path = root / "sleeper.sh"
    path.write_text("#!/bin/sh\nexec sleep 600\n")
    path.chmod(0o755)
    return [str(path)]


def submit_as(c, token, root, name, check=True, user="alice", **overrides):
    """dpoctl submit of a spec writing under <root>/out/<user>/<name> (the user's own directory
    of the write root), as the holder of `token`."""
    path = root / f"{name}.yaml"
    path.write_text(spec(root / "out" / user / name, **overrides))
    return c.ctl("submit", path, token=token, check=check)


def get(c, token, job_id):
    out = c.ctl("get", job_id, token=token).stdout
    return dict(line.strip().split(": ", 1) for line in out.splitlines() if ": " in line)


def wait_running(c, token, job_id, timeout=120):
    deadline = time.time() + timeout
    while get(c, token, job_id)["state"] != "running":
        assert time.time() < deadline, get(c, token, job_id)
        time.sleep(0.3)


def dpoctl_env(c, token):
    return dict(os.environ, HOME=str(c.root), DPO_TOKEN=token)


@pytest.fixture
def secured(tmp_path):
    """Users alice, bob and root (admin); reads confined to examples/ and <tmp>/in, writes to
    <tmp>/out; jobs 'run' under the sleeper launcher."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    tokens = {name: add_token(tmp_path, name, admin=name == "root") for name in ("alice", "bob", "root")}
    c = Coordinator(tmp_path, launcher=sleeper(tmp_path),
                    extra=["--read-root", EXAMPLES, "--read-root", tmp_path / "in", "--write-root", tmp_path / "out"])
    c.tokens = tokens
    yield c
    c.stop()


def test_calls_need_a_valid_token(secured, tmp_path):
    c, t = secured, secured.tokens
    for token in (None, "dpo_" + "0" * 64, t["alice"][:-1]):
        proc = c.ctl("list", token=token, check=False)
        assert proc.returncode == 1 and "UNAUTHENTICATED" in proc.stderr, (token, proc.stderr)
    assert c.ctl("list", token=t["alice"]).returncode == 0
    db = ["--db", tmp_path / "jobs.db"]
    listing = subprocess.run([COORDINATOR, "token", "list", *db], capture_output=True, text=True, check=True).stdout
    assert listing.splitlines() == ["alice", "bob", "root admin"]
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("jobs.db*"))
    assert all(token.encode() not in stored for token in t.values())  # only their hashes
    again = subprocess.run([COORDINATOR, "token", "add", "bob", *db], capture_output=True, text=True)
    assert again.returncode == 1 and "already has a token" in again.stderr
    dots = subprocess.run([COORDINATOR, "token", "add", "..", *db], capture_output=True, text=True)
    assert dots.returncode == 1 and "starting with a letter or digit" in dots.stderr  # names are directories
    subprocess.run([COORDINATOR, "token", "revoke", "bob", *db], check=True)
    proc = c.ctl("list", token=t["bob"], check=False)  # revoked while the coordinator runs
    assert proc.returncode == 1 and "UNAUTHENTICATED" in proc.stderr


def test_non_loopback_address_needs_tokens_and_tls(tmp_path):
    proc = subprocess.run([COORDINATOR, "--listen", "0.0.0.0:0", "--db", tmp_path / "jobs.db",
                           "--work-dir", tmp_path / "jobs", "--metrics-listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not a loopback address" in proc.stderr, proc.stderr


def test_a_job_belongs_to_its_submitter(secured, tmp_path):
    c, t = secured, secured.tokens
    job_id = int(submit_as(c, t["alice"], tmp_path, "mine").stdout)
    assert get(c, t["alice"], job_id)["owner"] == "alice"
    for command in ("get", "cancel", "logs", "watch"):
        proc = c.ctl(command, job_id, token=t["bob"], check=False)
        assert proc.returncode == 1 and "PERMISSION_DENIED" in proc.stderr, (command, proc.stderr)
    listed = re.compile(rf"^{job_id}\s", re.M)
    assert not listed.search(c.ctl("list", token=t["bob"]).stdout)
    assert listed.search(c.ctl("list", token=t["alice"]).stdout)
    assert listed.search(c.ctl("list", token=t["root"]).stdout)  # an admin sees every job
    assert get(c, t["root"], job_id)["owner"] == "alice"
    assert c.ctl("cancel", job_id, token=t["root"]).returncode == 0  # and act on it


def test_spec_paths_outside_their_roots_are_refused(secured, tmp_path):
    c, token = secured, secured.tokens["alice"]
    inside = tmp_path / "in"
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"prompt": "top secret line"}\n')
    (inside / "escape.jsonl").symlink_to(secret)
    os.mkfifo(inside / "fifo.jsonl")
    cases = {
        "dotdot": ({"data.train": f'"{inside}/../secret.jsonl"'}, "data.train", "is not inside the read roots"),
        "symlink": ({"data.train": f'"{inside}/escape.jsonl"'}, "data.train", "is not inside the read roots"),
        "absolute": ({"tokenizer.path": f'"{secret}"'}, "tokenizer.path", "is not inside the read roots"),
        "fifo": ({"data.train": f'"{inside}/fifo.jsonl"'}, "data.train", "is not a regular file or directory"),
        "dev_zero": ({"data.train": '"/dev/zero"'}, "data.train", "is not inside the read roots"),
        "metrics": ({"output.metrics_file": '"/dev/zero"'}, "output.metrics_file", "is not inside output.dir"),
        "metrics_up": ({"output.metrics_file": '"../../x.jsonl"'}, "output.metrics_file", "is not inside output.dir"),
        "out_elsewhere": ({"output.dir": f'"{tmp_path}/elsewhere"'}, "output.dir", "is not inside the write root"),
        "out_dotdot": ({"output.dir": f'"{tmp_path}/out/alice/../../escaped"'}, "output.dir", "is not inside the write root"),
        "out_of_bob": ({"output.dir": f'"{tmp_path}/out/bob/run"'}, "output.dir", "is not inside the write root"),
        "read_bob": ({"output.resume_from_checkpoint": f'"{tmp_path}/out/bob"'}, "output.resume_from_checkpoint",
                     "is not inside the read roots"),
    }
    for name, (overrides, field, why) in cases.items():
        proc = submit_as(c, token, tmp_path, name, check=False, **overrides)
        assert proc.returncode == 1 and "INVALID_ARGUMENT" in proc.stderr, (name, proc.stderr)
        assert f"{field}: " in proc.stderr and why in proc.stderr, (name, proc.stderr)
        assert "top secret" not in proc.stderr, name
    # The same words whether the file outside the roots exists or not.
    refusals = [submit_as(c, token, tmp_path, "probe", check=False, **{"data.train": f'"{path}"'}).stderr
                for path in (secret, tmp_path / "no-such.jsonl")]
    assert refusals[0].replace(str(secret), "P") == refusals[1].replace(str(tmp_path / "no-such.jsonl"), "P")
    assert c.ctl("list", token=secured.tokens["root"]).stdout.count("\n") == 1  # nothing was queued


def test_fifos_and_devices_are_refused_in_single_user_mode_too(tmp_path):
    c = Coordinator(tmp_path, worker=tmp_path / "no-such-dpo-worker")
    try:
        os.mkfifo(tmp_path / "fifo")
        for overrides in ({"data.train": '"/dev/zero"'}, {"data.train": f'"{tmp_path}/fifo"'}):
            path = tmp_path / "dev.yaml"
            path.write_text(spec(tmp_path / "dev", **overrides))
            proc = c.ctl("submit", path, check=False, timeout=30)
            assert proc.returncode == 1 and "data.train: " in proc.stderr
            assert "is not a regular file or directory" in proc.stderr, proc.stderr
        (tmp_path / "dev" / "run").mkdir(parents=True)
        os.mkfifo(tmp_path / "dev" / "run" / "metrics.jsonl")  # would block whoever opens it
        path.write_text(spec(tmp_path / "dev"))
        proc = c.ctl("submit", path, check=False, timeout=30)
        assert "output.metrics_file: " in proc.stderr and "is not a regular file" in proc.stderr
        assert c.ctl("list", timeout=30).returncode == 0
    finally:
        c.stop()


def test_one_output_directory_in_four_spellings_is_one_job(secured, tmp_path):
    c, token = secured, secured.tokens["alice"]
    out = tmp_path / "out" / "alice" / "same"
    spellings = [f"{out}", f"{out}/", f"{tmp_path}/out/alice/./same", f"/{out}"]
    results = [submit_as(c, token, tmp_path, f"s{i}", check=False,
                         **{"output.dir": f'"{s}"', "data.prepared_dir": f'"{out}/prepared"'})
               for i, s in enumerate(spellings)]
    assert results[0].returncode == 0, results[0].stderr
    for spelling, proc in zip(spellings[1:], results[1:]):
        assert proc.returncode == 1 and "FAILED_PRECONDITION" in proc.stderr, spelling
        assert f"is in use by job {int(results[0].stdout)}" in proc.stderr, proc.stderr


def make_certificate(root):
    key, cert = root / "key.pem", root / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_with_a_self_made_certificate(tmp_path):
    cert, key = make_certificate(tmp_path)
    token = add_token(tmp_path, "alice")
    c = Coordinator(tmp_path, extra=["--tls-cert", cert, "--tls-key", key])
    try:
        assert c.ctl("list", token=token, options=["--ca-cert", cert]).returncode == 0
        plain = c.ctl("list", token=token, check=False, timeout=60)
        assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr, plain.stderr
    finally:
        c.stop()


def test_token_files_readable_by_others_are_refused(secured, tmp_path):
    c, t = secured, secured.tokens
    token_file = tmp_path / "token"
    token_file.write_text(t["alice"] + "\n")
    token_file.chmod(0o644)
    proc = c.ctl("list", options=["--token-file", token_file], check=False)
    assert proc.returncode == 1 and "readable by group or others" in proc.stderr, proc.stderr
    token_file.chmod(0o600)
    assert c.ctl("list", options=["--token-file", token_file]).returncode == 0
    config = tmp_path / ".config" / "dpo" / "token"  # dpoctl's HOME is tmp_path
    config.parent.mkdir(parents=True)
    config.write_text(t["bob"])
    config.chmod(0o640)
    assert "readable by group or others" in c.ctl("list", check=False).stderr
    config.chmod(0o600)
    path = tmp_path / "by_config.yaml"
    path.write_text(spec(tmp_path / "out" / "bob" / "by_config"))
    job_id = int(c.ctl("submit", path).stdout)
    assert get(c, t["root"], job_id)["owner"] == "bob"
    # $DPO_TOKEN comes before the config file, and --token-file before both.
    assert "PERMISSION_DENIED" in c.ctl("get", job_id, token=t["alice"], check=False).stderr
    by_file = c.ctl("get", job_id, token=t["bob"], options=["--token-file", token_file], check=False)
    assert "PERMISSION_DENIED" in by_file.stderr  # alice's file, not bob's $DPO_TOKEN


def test_invalid_utf8_is_invalid_argument_naming_the_field(secured, tmp_path):
    c, token = secured, secured.tokens["alice"]
    path = tmp_path / "utf8.yaml"
    path.write_text(spec(tmp_path / "out" / "alice" / "utf8"))
    proc = c.ctl("submit", path, "--name", "bad\udcff", token=token, check=False)  # byte 0xff
    assert proc.returncode == 1 and "INVALID_ARGUMENT: name: invalid UTF-8 at byte 3" in proc.stderr, proc.stderr
    proc = c.ctl("submit", path, "--name", "n" * 257, token=token, check=False)
    assert "INVALID_ARGUMENT: name: 257 bytes" in proc.stderr
    path.write_bytes(spec(tmp_path / "out" / "alice" / "utf8").encode() + b"# \xc3\x28\n")
    proc = c.ctl("submit", path, token=token, check=False)
    assert proc.returncode == 1 and "INVALID_ARGUMENT: spec_yaml: invalid UTF-8 at byte" in proc.stderr


def test_request_rate_is_limited_per_user(tmp_path):
    tokens = {name: add_token(tmp_path, name) for name in ("alice", "bob")}
    c = Coordinator(tmp_path, extra=["--max-rps-per-user", "2"])  # bursts of 4
    try:
        results = [c.ctl("list", token=tokens["alice"], check=False) for _ in range(10)]
        refused = [p for p in results if p.returncode != 0]
        assert refused and all("RESOURCE_EXHAUSTED" in p.stderr for p in refused)
        assert "over its request rate" in refused[0].stderr
        assert c.ctl("list", token=tokens["bob"]).returncode == 0  # one bucket per user
    finally:
        c.stop()


def test_queued_jobs_are_limited_per_user(tmp_path):
    tokens = {name: add_token(tmp_path, name) for name in ("alice", "bob")}
    c = Coordinator(tmp_path, launcher=sleeper(tmp_path), extra=["--max-queued-per-user", "1"])
    try:
        first = int(submit_as(c, tokens["alice"], tmp_path, "q1").stdout)
        wait_running(c, tokens["alice"], first)
        submit_as(c, tokens["alice"], tmp_path, "q2")  # queued behind the running one
        refused = submit_as(c, tokens["alice"], tmp_path, "q3", check=False)
        assert refused.returncode == 1 and "RESOURCE_EXHAUSTED" in refused.stderr
        assert "1 jobs queued already" in refused.stderr
        submit_as(c, tokens["bob"], tmp_path, "b1")  # another user's queue
    finally:
        c.stop()


def test_sigterm_stops_the_coordinator_within_10_s_with_calls_in_flight(secured, tmp_path):
    c, token = secured, secured.tokens["alice"]
    job_id = int(submit_as(c, token, tmp_path, "busy").stdout)
    wait_running(c, token, job_id)
    watch = subprocess.Popen([DPOCTL, "--server", c.server, "watch", str(job_id)], env=dpoctl_env(c, token),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    start = time.monotonic()
    c.proc.send_signal(signal.SIGTERM)
    c.proc.wait(timeout=30)
    assert time.monotonic() - start < 10
    watch.communicate(timeout=30)
    assert watch.returncode == 1  # the stream ended with the coordinator


def test_health_check_and_reflection_answer(secured):
    with grpc.insecure_channel(secured.server) as channel:
        health = channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)
        assert health == b"\x08\x01"  # HealthCheckResponse{status: SERVING}, no token needed
        list_services = b"\x3a\x00"  # ServerReflectionRequest{list_services: ""}
        replies = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")(
            iter([list_services]), timeout=10)
        assert b"dpo.v1.JobService" in b"".join(replies)


def test_watch_streams_until_the_job_ends(secured, tmp_path):
    c, token = secured, secured.tokens["alice"]
    job_id = int(submit_as(c, token, tmp_path, "watched").stdout)
    watch = subprocess.Popen([DPOCTL, "--server", c.server, "watch", str(job_id)], env=dpoctl_env(c, token),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Cancel only once the stream itself has shown the job running: the stream samples the job,
    # so a cancel right after GetJob first sees it running can end the job between two samples.
    killer = threading.Timer(60, watch.kill)  # bounds the read below
    killer.start()
    seen = []
    for line in watch.stdout:
        seen.append(line)
        if line.startswith("job ") and line.split()[2] == "running":
            break
    c.ctl("cancel", job_id, token=token)
    out, err = watch.communicate(timeout=60)
    killer.cancel()
    out = "".join(seen) + out
    assert watch.returncode == 1, err  # the job did not succeed
    states = [line.split()[2] for line in out.splitlines() if line.startswith("job ")]
    assert "running" in states and states[-1] == "cancelled", out


def test_watch_streams_are_bounded_per_user(secured, tmp_path):
    c, t = secured, secured.tokens
    job_id = int(submit_as(c, t["alice"], tmp_path, "popular").stdout)
    watch = [DPOCTL, "--server", c.server, "watch", str(job_id)]
    streams = [subprocess.Popen(watch, env=dpoctl_env(c, t["alice"]), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(8)]
    try:
        for s in streams:  # each has its first update: its stream is open
            assert s.stdout.readline().startswith(f"job {job_id} ")
        ninth = c.ctl("watch", job_id, token=t["alice"], check=False, timeout=60)
        assert ninth.returncode == 1 and "RESOURCE_EXHAUSTED" in ninth.stderr, ninth.stderr
        assert c.ctl("get", job_id, token=t["root"]).returncode == 0  # the service still answers
    finally:
        for s in streams:
            s.kill()
            s.communicate()


def test_listing_is_paged(secured, tmp_path):
    c, t = secured, secured.tokens
    ids = [int(submit_as(c, t["alice"], tmp_path, f"p{i}").stdout) for i in range(3)]
    rows = lambda out: [int(line.split()[0]) for line in out.splitlines()[1:]]
    assert rows(c.ctl("list", "--limit", "2", token=t["alice"]).stdout) == ids[::-1][:2]
    assert rows(c.ctl("list", token=t["alice"]).stdout) == ids[::-1]


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    """The JobService's Python stubs, generated from the proto with grpcio-tools: their folder
    and the (messages, services) modules."""
    out = tmp_path_factory.mktemp("stubs")
    return out, *generate_stubs(out)


def test_every_list_reply_is_bounded(secured, tmp_path, stubs):
    # 300 jobs with 64 KiB specs and 4 KiB names and output paths: unpaged, 19 MiB in one reply.
    now = int(time.time() * 1000)
    with sqlite3.connect(tmp_path / "jobs.db", timeout=30) as db:
        db.executemany("INSERT INTO jobs (name, state, spec_yaml, output_dir, submitted_ms, owner)"
                       " VALUES (?, 'succeeded', ?, ?, ?, 'alice')",
                       [("n" * 4096, "#" * 65536, "/" + "d" * 4095, now) for _ in range(300)])
    _, pb, rpc = stubs
    metadata = [("authorization", f"Bearer {secured.tokens['alice']}")]
    with grpc.insecure_channel(secured.server) as channel:
        stub = rpc.JobServiceStub(channel)
        seen, token = [], b""
        while True:
            page = stub.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token), metadata=metadata, timeout=30)
            assert len(page.jobs) <= 100 and page.ByteSize() < 1 << 20
            assert all(not job.spec_yaml and len(job.name.encode()) <= 1027 for job in page.jobs)
            seen += [job.id for job in page.jobs]
            if not page.next_page_token:
                break
            token = page.next_page_token.encode()
        assert seen == sorted(seen, reverse=True) and len(set(seen)) == 300
        with pytest.raises(grpc.RpcError) as bad:
            stub.ListJobs(pb.ListJobsRequest(page_token=b"x"), metadata=metadata, timeout=30)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in bad.value.details()


def test_python_client_submits_and_watches_a_job(tmp_path, stubs):
    token_file = tmp_path / "token"
    token_file.write_text(add_token(tmp_path, "alice"))
    token_file.chmod(0o600)
    c = Coordinator(tmp_path)
    try:
        path = tmp_path / "job.yaml"
        path.write_text(spec(tmp_path / "py", **{"train.max_steps": "2"}))
        proc = subprocess.run([sys.executable, SOURCE_DIR / "examples" / "python_client.py", "--server", c.server,
                               "--token-file", token_file, path], capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, PYTHONPATH=str(stubs[0])))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert re.search(r"^job \d+ JOB_STATE_SUCCEEDED step 2/2$", proc.stdout, re.M), proc.stdout
    finally:
        c.stop()
