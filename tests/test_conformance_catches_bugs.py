"""The conformance suite fails where it should: run it on broken transports."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Run tests/broken_transports.py once; map each test id to its outcome."""
    report = tmp_path_factory.mktemp("broken") / "junit.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(HERE / "broken_transports.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            "-o",
            "addopts=",
            "--timeout=600",
        ],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    results: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        failed = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        results[f"{cls}::{case.get('name')}"] = (
            "failed" if failed else "skipped" if skipped else "passed"
        )
    return results


def _failed(outcomes: dict[str, str], cls: str) -> set[str]:
    return {
        k.split("::")[1] for k, v in outcomes.items() if k.startswith(cls + "::") and v == "failed"
    }


def test_lost_update_is_caught(outcomes: dict[str, str]) -> None:
    assert "test_any_racing_match_never_loses_an_update" in _failed(outcomes, "TestLostUpdate")


def test_check_then_write_is_caught(outcomes: dict[str, str]) -> None:
    failed = _failed(outcomes, "TestCheckThenWrite")
    assert "test_one_winner_per_round" in failed
    assert "test_counter_of_cas_increments_is_exact" in failed


def test_sloppy_wire_form_is_caught(outcomes: dict[str, str]) -> None:
    failed = _failed(outcomes, "TestSloppyWire")
    assert "test_wire_form_is_65_bytes" in failed
    assert any(name.startswith("test_malformed_stored_value_is_refused") for name in failed)


def test_ignored_missing_is_caught(outcomes: dict[str, str]) -> None:
    failed = _failed(outcomes, "TestIgnoresMissing")
    assert "test_cas_cell[A-MISSING-conflict]" in failed
    assert "test_cas_cell[absent-MISSING-written]" not in failed


def test_correct_parts_still_pass(outcomes: dict[str, str]) -> None:
    """The broken transports are broken in one place only; the rest passes."""
    assert outcomes["TestIgnoresMissing::test_listing_component_boundary"] == "passed"
    assert outcomes["TestSloppyWire::test_read_absent_is_none"] == "passed"
