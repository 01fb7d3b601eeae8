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
