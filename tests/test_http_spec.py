"""SPEC-HTTP and its tests stay in step: every MUST ID is in the table, every test exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
SPEC = (ROOT / "spec" / "SPEC-HTTP.md").read_text(encoding="utf-8")
_TABLE = SPEC[SPEC.index("## 8. MUST") :]


def _rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in _TABLE.splitlines():
        match = re.match(r"\| (HTTP-\d+) \|[^|]*\|(.*)\|$", line)
        if match:
            rows[match.group(1)] = re.findall(r"`(tests/[^`:]+::\w+)`", match.group(2))
    return rows


def test_every_must_id_has_a_row_with_tests() -> None:
    body_ids = set(re.findall(r"\[(HTTP-\d+)\]", SPEC))
    rows = _rows()
    assert body_ids, "the spec defines no MUST IDs"
    assert body_ids == set(rows), "IDs in the text and the table differ"
    assert all(rows[i] for i in rows), "a MUST has no test"


def test_every_named_test_exists() -> None:
    for refs in _rows().values():
        for ref in refs:
            path, name = ref.split("::")
            source = (ROOT / path).read_text(encoding="utf-8")
            assert re.search(rf"^(def|class) {name}\b", source, re.M), f"missing {ref}"
