"""Where the tests find the read-only shared data: ../shared beside the repository (or
DPO_SHARED_DIR). A test that needs it is skipped on a developer's machine without it, but in CI
(CI set) a missing data set is an error: it would otherwise turn oracle tests into no tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SOURCE_DIR = Path(os.environ.get("DPO_SOURCE_DIR", Path(__file__).resolve().parents[2]))
SHARED_DIR = Path(os.environ.get("DPO_SHARED_DIR", SOURCE_DIR.parent / "shared"))
HH_RLHF = SHARED_DIR / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def needs_shared(path: Path):
    """A pytest mark for tests that read `path`: none when it exists; a skip without it, except
    in CI, where it raises (a collection error fails the run)."""
    if path.exists():
        return pytest.mark.skipif(False, reason="")
    if os.environ.get("CI"):
        raise FileNotFoundError(f"{path} is missing: CI runs with ../shared beside the repository")
    return pytest.mark.skip(reason=f"needs {path}")
