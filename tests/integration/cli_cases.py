"""The exit-status cases of our programs' command lines (docs/cli.md), run for real.

Each test_cli_*.py file lists its programs' cases as `Case`s; test_cli_docs.py checks that the
documented (program, exit status) rows of docs/cli.md are exactly the ones the cases cover."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("DPO_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BINARY_DIR = Path(os.environ.get("DPO_BINARY_DIR", SOURCE_DIR / "build"))
EXAMPLES = SOURCE_DIR / "examples"

# A job spec for the random tiny Llama on the example pairs, as a Case's file ({tmp}, {examples}).
TINY_SPEC = """model:
  random: {{config: "{examples}/tiny-llama/config.json", seed: 7}}
  device: cpu
tokenizer:
  path: "{examples}/tokenizer"
data:
  train: "{examples}/data/hh_rlhf_sample.jsonl"
  prepared_dir: "{tmp}/prepared"
output:
  dir: "{tmp}/run"
"""

# The statuses every program shares (common/util/cli.h).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Case:
    """`program args...` exits with `exit` and prints `stderr_has` (and `stdout_has`). In args,
    {tmp} is the test's temporary directory and {examples} the bundled examples/."""
    program: str  # path relative to the build directory, e.g. "bin/dpo-prepare-job"
    args: tuple[str, ...]
    exit: int
    stderr_has: str = ""
    stdout_has: str = ""
    when: str = ""  # the docs/cli.md row this case shows
    files: dict[str, str] = field(default_factory=dict)  # name in {tmp} -> content, written first
    stdin: str = ""  # the program's standard input

    @property
    def name(self) -> str:
        return Path(self.program).name


def run_case(case: Case, tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    for name, content in case.files.items():
        (tmp / name).write_text(content.format(tmp=tmp, examples=EXAMPLES))
    args = [a.format(tmp=tmp, examples=EXAMPLES) for a in case.args]
    return subprocess.run([str(BINARY_DIR / case.program), *args], input=case.stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=tmp)


def check_case(case: Case, tmp: Path) -> None:
    result = run_case(case, tmp)
    where = f"{case.name} {' '.join(case.args)}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
    assert result.returncode == case.exit, where
    assert case.stderr_has in result.stderr, where
    assert case.stdout_has in result.stdout, where


def check_help_lists(program: str, flags: list[str], tmp: Path, command: tuple[str, ...] = ()) -> None:
    """`program [command...] --help` exits 0 and its generated text names every flag (a program with
    subcommands lists each command's flags in the command's own --help)."""
    result = subprocess.run([str(BINARY_DIR / program), *command, "--help"], capture_output=True, text=True,
                            timeout=60, cwd=tmp)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.startswith(("Usage:", Path(program).name)) or "Usage:" in result.stdout, result.stdout
    for flag in flags:
        assert flag in result.stdout, f"{program} --help does not name {flag}:\n{result.stdout}"
    assert result.stderr == ""
