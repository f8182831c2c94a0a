"""docs/cli.md's exit-status table lists exactly the (program, status) rows that the
test_cli_*.py cases cause, with the same words, so the documentation cannot drift from what the
programs do."""
from __future__ import annotations

import re

import test_cli_coordinator
import test_cli_tools
import test_cli_worker
from cli_cases import SOURCE_DIR

# Documented in docs/cli.md's text instead of the table; each names why no Case causes it.
NOT_CAUSED_HERE = {
    ("dpo-worker", 75): "tests/integration/test_worker_faults.py (SIGTERM)",
    ("dpo-worker", 76): "tests/integration/test_worker_faults.py (collective timeout)",
    ("allreduce-bench", 1): "no test can make a collective compute a wrong sum",
}


def documented_rows() -> dict[tuple[str, int], str]:
    rows = {}
    for line in (SOURCE_DIR / "docs" / "cli.md").read_text().splitlines():
        match = re.fullmatch(r"\| `([\w.-]+)` \| (\d+) \| (.+) \|", line)
        if match:
            rows[(match[1], int(match[2]))] = match[3].replace("`", "")
    return rows


def rows_the_cases_cause() -> dict[tuple[str, int], set[str]]:
    rows: dict[tuple[str, int], set[str]] = {}
    for module in (test_cli_coordinator, test_cli_worker, test_cli_tools):
        for case in module.CASES:
            rows.setdefault((case.name, case.exit), set()).add(case.when.replace("`", ""))
    return rows


def test_every_documented_status_is_tested_and_every_tested_one_documented():
    documented, tested = documented_rows(), rows_the_cases_cause()
    assert len(documented) >= 30, "the table's rows were not found; did its format change?"
    assert set(documented) == set(tested), (
        f"documented only: {sorted(set(documented) - set(tested))}; "
        f"tested only: {sorted(set(tested) - set(documented))}")
    for row, whens in tested.items():
        assert whens == {documented[row]}, f"{row}: the cases say {whens}, docs/cli.md says {documented[row]!r}"


def test_statuses_outside_the_table_are_named_in_the_text():
    text = (SOURCE_DIR / "docs" / "cli.md").read_text()
    for (program, status) in NOT_CAUSED_HERE:
        assert re.search(rf"`{re.escape(program)}`[^\n]*\n?[^\n]*\*\*{status}\*\*", text), (program, status)
        assert (program, status) not in documented_rows()
