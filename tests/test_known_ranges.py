"""The known-failures table is measured, not guessed: against the committed release matrix
(fixtures/matrix/, written by `boxlite-chaos matrix`, one symbol per runtime for every scenario
× check), today's table must explain every release exactly:
- no violation on any release without an entry that names that release (it would be red for
  the table, not for the runtime);
- no strict entry claiming a release where its check held (it would be `fixed`);
- every entry named by some violation in the matrix, and naming that matrix in `measured`;
- no violation judged unlike the symptom of the entry that covers it (`E` cells: a matrix run
  with symptoms records them; its summary keeps no evidence to judge them again).
An entry the gate's scenarios cannot judge on every release says so in `measured`, beginning
with "not in the matrix:" and the reason.
"""

from __future__ import annotations

import json

import pytest

from harness.common.paths import PROJECT
from harness.jobs.matrix.grid import VIOLATIONS, against_table, rows_from_summary
from harness.jobs.matrix.releases import RELEASES
from harness.judge.checks import VIOLATED
from harness.judge.known import FIXED, UNEXPECTED, load_table

NOT_IN_MATRIX = "not in the matrix:"
TABLE = load_table()
# The committed matrices' columns are releases of the Python SDK (`_rows` keeps those only).
PYTHON = "python"
SUMMARIES = sorted({e.measured for e in TABLE if e.measured.startswith("fixtures/matrix/")})


def _rows(path: str) -> tuple[list[str], list[dict]]:
    summary = json.loads((PROJECT / path).read_text())
    return [k for k in summary["runtimes"] if k in RELEASES], rows_from_summary(summary)


def test_every_entry_names_its_measurement():
    for e in TABLE:
        assert e.measured, f"{e.id}: no `measured` (the matrix summary that measured it)"
        if e.measured.startswith(NOT_IN_MATRIX):
            assert len(e.measured) > len(NOT_IN_MATRIX) + 10, f"{e.id}: say why"
        else:
            assert e.measured in SUMMARIES and (PROJECT / e.measured).is_file(), e.measured


@pytest.mark.parametrize("path", SUMMARIES)
def test_the_table_explains_the_matrix_on_every_release(path):
    ran, rows = _rows(path)
    assert set(RELEASES) <= set(ran), f"{path} lacks {sorted(set(RELEASES) - set(ran))}"
    wrong = []
    for r in rows:
        for v in ran:
            now = against_table(r["cells"][v], r["check"], r.get("judged_as") or v,
                                r["scenario"], TABLE, PYTHON)
            if now in (VIOLATED, FIXED, UNEXPECTED):
                wrong.append(f"{v} {now}: {r['scenario']} {r['check']}")
    assert not wrong, f"{len(wrong)} cells the table does not explain:\n" + "\n".join(wrong[:40])


@pytest.mark.parametrize("entry", [e for e in TABLE if e.measured in SUMMARIES],
                         ids=lambda e: e.id)
def test_each_entry_is_named_by_a_violation_in_its_matrix(entry):
    ran, rows = _rows(entry.measured)
    for r in rows:
        for v in ran:
            version = r.get("judged_as") or v
            first = next((k for k in TABLE
                          if k.applies(r["check"], version, r["scenario"], PYTHON)), None)
            if r["cells"][v] in VIOLATIONS and first is entry:
                return
    pytest.fail(f"{entry.id}: no violation in {entry.measured} is explained by it")


@pytest.mark.parametrize("path", sorted(str(p.relative_to(PROJECT))
                                        for p in (PROJECT / "fixtures" / "matrix").glob("*.json")))
def test_no_committed_matrix_shows_a_violation_unlike_its_symptom(path):
    """Every committed matrix summary, partial ones included (the symptom matrix of
    2026-12-06 over 0.9.4, 0.9.5, 0.9.7, 0.10.0): no cell where a violation did not show the
    symptom of the entry that covers it, once judged again against today's table."""
    ran, rows = _rows(path)
    wrong = [f"{v}: {r['scenario']} {r['check']}" for r in rows for v in ran
             if against_table(r["cells"][v], r["check"], r.get("judged_as") or v,
                              r["scenario"], TABLE, PYTHON) == UNEXPECTED]
    assert not wrong, "\n".join(wrong[:40])
