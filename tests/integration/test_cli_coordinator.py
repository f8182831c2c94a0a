"""The command lines of the job service's programs: dpo-coordinator, dpoctl, dpo-prepare-job
(docs/cli.md). Strict numbers, flags in any position, generated --help, the exit statuses."""
from __future__ import annotations

import pytest

from cli_cases import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Case, check_case, check_help_lists

SPEC = """model:
  random: {{config: "{examples}/tiny-llama/config.json", seed: 1}}
tokenizer:
  path: "{examples}/tokenizer"
data:
  train: "{examples}/data/hh_rlhf_sample.jsonl"
  prepared_dir: "{tmp}/prepared"
output:
  dir: "{tmp}/out"
"""

CASES = [
    Case("bin/dpo-prepare-job", ("{tmp}/job.yaml",), EXIT_OK, files={"job.yaml": SPEC},
         when="the data sets are prepared"),
    Case("bin/dpo-prepare-job", ("{tmp}/missing.yaml",), EXIT_FAILURE, stderr_has="missing.yaml: cannot read",
         when="the spec or its data cannot be read or prepared (the reason, file:line, is the last line)"),
    Case("bin/dpo-prepare-job", (), EXIT_USAGE, stderr_has="JOB.yaml is required", when="usage"),
    Case("bin/dpo-prepare-job", ("a.yaml", "b.yaml"), EXIT_USAGE, stderr_has="not expected: b.yaml",
         when="usage"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}-{c.exit}-{'-'.join(c.args)[:40]}")
def test_case(case: Case, tmp_path):
    check_case(case, tmp_path)


def test_prepare_job_help(tmp_path):
    check_help_lists("bin/dpo-prepare-job", ["JOB.yaml"], tmp_path)
