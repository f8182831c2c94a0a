"""Runs our dpo-worker on the bundled example data (examples/), for the integration tests."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("DPO_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BINARY_DIR = Path(os.environ.get("DPO_BINARY_DIR", SOURCE_DIR / "build"))
WORKER = BINARY_DIR / "bin" / "dpo-worker"
EXAMPLES = SOURCE_DIR / "examples"
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"]


def spec(out: Path, **overrides) -> str:
    """A job spec for the random tiny Llama on the example pairs. overrides: 'section.key' -> YAML
    value text, e.g. {'train.max_steps': '6'}."""
    values = {
        "model.random": f'{{config: "{EXAMPLES / "tiny-llama" / "config.json"}", seed: 7}}',
        "model.device": "cpu",
        "tokenizer.path": f'"{EXAMPLES / "tokenizer"}"',
        "data.train": f'"{EXAMPLES / "data" / "hh_rlhf_sample.jsonl"}"',
        "data.max_length": "192",
        "data.prepared_dir": f'"{out / "prepared"}"',
        "dpo.beta": "0.1",
        "train.seed": "3",
        "train.per_device_train_batch_size": "4",
        "train.max_steps": "6",
        "train.learning_rate": "1e-3",
        "train.logging_steps": "1",
        "train.save_steps": "3",
        "reference.mode": "model",
        "output.dir": f'"{out / "run"}"',
    }
    for key, value in overrides.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    sections: dict[str, list[str]] = {}
    for key, value in values.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append(f"  {name}: {value}")
    return "".join(f"{s}:\n" + "\n".join(lines) + "\n" for s, lines in sections.items())


def worker_command(out: Path, ranks: int = 1, **overrides) -> list[str]:
    """Writes out/job.yaml (spec() with `overrides`) and returns the command that runs it, under
    mpirun when ranks > 1."""
    out.mkdir(parents=True, exist_ok=True)
    job = out / "job.yaml"
    job.write_text(spec(out, **overrides))
    cmd = [str(WORKER), "--job", str(job)]
    return MPIRUN + ["-np", str(ranks)] + cmd if ranks > 1 else cmd


def run_worker(out: Path, ranks: int = 1, check: bool = True, timeout: int = 900,
               **overrides) -> subprocess.CompletedProcess:
    cmd = worker_command(out, ranks, **overrides)
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"dpo-worker exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def metrics(out: Path, split: str = "train") -> list[dict]:
    path = out / "run" / "metrics.jsonl"
    return [l for l in map(json.loads, path.read_text().splitlines()) if l["split"] == split]
