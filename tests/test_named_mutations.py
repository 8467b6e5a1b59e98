"""``.ci/named-mutations`` (``make mutate``) finds each formula it mutates exactly once in the current
source, so a refactor that rewrites one of those lines breaks this test instead of the script (it
did: 0d4ee0e turned tier E's ``stats.positions * float(...)`` into ``* sum_product(...)``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mutations() -> list[tuple[str, str, str, str, str]]:
    tree = ast.parse((ROOT / ".ci" / "named-mutations").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["M"]:
            return [tuple(row) for row in ast.literal_eval(node.value)]
    raise AssertionError("no M = [...] in .ci/named-mutations")


def test_every_named_mutation_applies_to_exactly_one_line() -> None:
    rows = _mutations()
    assert len(rows) == 7  # the seven issue 12 named
    for name, source, old, new, tests in rows:
        assert (ROOT / source).read_text().count(old) == 1, name
        assert old != new and (ROOT / tests).is_file(), name
