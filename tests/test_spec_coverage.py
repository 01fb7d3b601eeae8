"""Spec and conformance suite stay in step: every MUST ID has a test, and back."""

from __future__ import annotations

import re
from pathlib import Path

from mkit_transport import conformance
from mkit_transport.conformance import ConformanceSuite

ROOT = Path(__file__).parent.parent
SPECS = [ROOT / "spec" / "SPEC-TRANSPORT.md", ROOT / "spec" / "SPEC-REFS.md"]


def _spec_ids() -> set[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in SPECS)
    ids = set(re.findall(r"\[(T-[A-Z]+-\d+)\]", text))
    return ids


def _test_ids() -> set[str]:
    found: set[str] = set()
    for name in dir(ConformanceSuite):
        for mark in getattr(getattr(ConformanceSuite, name), "pytestmark", []):
            if mark.name == "spec":
                found.update(mark.args)
    return found


def test_every_must_has_a_conformance_test() -> None:
    missing = _spec_ids() - _test_ids()
    assert not missing, f"MUSTs without a conformance test: {sorted(missing)}"


def test_every_conformance_test_checks_a_listed_must() -> None:
    unknown = _test_ids() - _spec_ids()
    assert not unknown, f"tests citing IDs the spec does not define: {sorted(unknown)}"


def test_every_suite_test_is_tagged() -> None:
    untagged = [
        name
        for name in dir(ConformanceSuite)
        if name.startswith("test_")
        and not any(
            m.name == "spec" for m in getattr(getattr(ConformanceSuite, name), "pytestmark", [])
        )
    ]
    assert untagged == []
    assert conformance.__all__


#: Specs whose MUST table names tests by path (``tests/x.py::name``, then bare ``name``s
#: from the same file), rather than through the conformance suite's marks.
TABLE_SPECS = {"SPEC-GC.md": "GC", "SPEC-FSCK.md": "FSCK", "SPEC-THREATS.md": "THREAT"}


def _table_rows(text: str, prefix: str) -> dict[str, str]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(rf"{prefix}-\d+", cells[0]):
            rows[cells[0]] = cells[2]
    return rows


def test_every_table_spec_must_names_tests_that_exist() -> None:
    for spec, prefix in TABLE_SPECS.items():
        text = (ROOT / "spec" / spec).read_text(encoding="utf-8")
        rows = _table_rows(text, prefix)
        ids = set(re.findall(rf"\[({prefix}-\d+)\]", text))
        assert ids and ids == set(rows), f"{spec}: MUST IDs without a table row, or back"
        for must, cell in rows.items():
            _assert_names_exist(spec, must, cell)


def _assert_names_exist(spec: str, must: str, cell: str) -> None:
    """Every test ``cell`` names (``tests/x.py::name``, then bare names) exists."""
    names = re.findall(r"`([^`]+)`", cell)
    assert names, f"{spec} {must} names no test"
    current: Path | None = None
    for named in names:
        name = named
        if "::" in named:
            path, name = named.split("::")
            current = ROOT / path
        assert current is not None and current.is_file(), f"{spec} {must}: {name}"
        source = current.read_text(encoding="utf-8")
        assert re.search(rf"^def {re.escape(name)}\(", source, re.M), (
            f"{spec} {must} names {current.name}::{name}, which does not exist"
        )


#: SPEC-SYNC rows written in the named-test form (the older rows also describe
#: coverage in prose, so they are not checked this way).
SYNC_NAMED_ROWS = [f"SYNC-{n}" for n in (*range(21, 26), *range(30, 52), *range(55, 61))]


def test_spec_sync_chunked_file_rows_name_tests_that_exist() -> None:
    text = (ROOT / "spec" / "SPEC-SYNC.md").read_text(encoding="utf-8")
    rows = _table_rows(text, "SYNC")
    ids = set(re.findall(r"\[(SYNC-\d+)\]", text))
    assert ids == set(rows), "SPEC-SYNC: MUST IDs without a table row, or back"
    for must in SYNC_NAMED_ROWS:
        _assert_names_exist("SPEC-SYNC.md", must, rows[must])
