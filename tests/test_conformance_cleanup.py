"""The suite leaves nothing behind on the store it tests, also when a test fails.

Run as a third party runs it (pytest on their own test module, in a subprocess),
against a file store; afterwards the store must hold no ref under the suite's
namespace. One extra test writes a ref and then fails, on purpose.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mkit_transport import FileTransport

ROOT = Path(__file__).resolve().parents[1]

MODULE = """
import os

import pytest

from mkit_transport import FileTransport, Hash
from mkit_transport.conformance import Harness, RaceSuite, RefSuite, StatefulSuite
from mkit_transport.conformance.base import SuiteBase

STORE = os.environ["MKIT_CLEANUP_STORE"]


def harness() -> Harness:
    return Harness(
        open=lambda retry: FileTransport(STORE, retry=retry),
        url=f"mkit+file://{STORE}",
        race_rounds=2,
        counter_increments=3,
        listing_refs=0,
        stateful_examples=3,
        stateful_steps=10,
    )


class TestSuiteParts(RefSuite, RaceSuite, StatefulSuite):
    @pytest.fixture
    def harness(self) -> Harness:
        return harness()


class TestFailing(SuiteBase):
    @pytest.fixture
    def harness(self) -> Harness:
        return harness()

    def test_writes_then_fails(self, transport, ns) -> None:
        transport.write_ref(f"{ns}/left/behind", Hash.of(b"x"))
        raise AssertionError("failing on purpose after a write")
"""


@pytest.mark.slow  # a nested pytest session
def test_the_suite_removes_every_ref_it_wrote(tmp_path: Path) -> None:
    store = tmp_path / "store"
    FileTransport(store).init_store()
    (tmp_path / "test_third_party.py").write_text(MODULE)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'tmp'}",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"MKIT_CLEANUP_STORE": str(store), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    tail = result.stdout[-3000:]
    assert "1 failed" in result.stdout, tail
    assert "failing on purpose after a write" in result.stdout, tail
    assert " passed" in result.stdout, tail
    # The refs the passing tests wrote and the failing test's ref are all gone.
    assert FileTransport(store).list_refs("refs/mkit-conformance") == [], tail
