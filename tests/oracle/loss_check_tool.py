"""Drives our dpo-loss-check program for the log-prob and loss oracle tests: tensors go in and
come out as JSON ({"shape", "data", "dtype"}), computed by the C++ code under test."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch


def tool() -> Path:
    path = Path(os.environ.get("DPO_BINARY_DIR", "build")) / "bin" / "dpo-loss-check"
    if not path.exists():
        pytest.fail(f"{path} is missing: build the dpo-loss-check target")
    return path


def enc(t: torch.Tensor) -> dict:
    dtype = {torch.float32: "float32", torch.int64: "int64", torch.bool: "bool"}[t.dtype]
    return {"shape": list(t.shape), "data": t.detach().double().flatten().tolist(), "dtype": dtype}


def dec(d: dict) -> torch.Tensor:
    return torch.tensor(d["data"], dtype=torch.float64).reshape(d["shape"])


def run_ours(tmp_path: Path, payload: dict) -> dict:
    """Runs dpo-loss-check on `payload`; every output tensor decoded, "metrics" left as JSON."""
    src, dst = tmp_path / "in.json", tmp_path / "out.json"
    src.write_text(json.dumps(payload))
    proc = subprocess.run([str(tool()), str(src), str(dst)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(dst.read_text())
    return {k: (v if k == "metrics" else dec(v)) for k, v in out.items()}
