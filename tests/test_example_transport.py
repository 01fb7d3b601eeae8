"""The example third-party transport (examples/sqlite_transport.py) passes the suite.

It is the page a third party copies, so it runs as they would run it: its own test
file, under pytest, with the suite's plugin; races in separate processes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_sqlite_example_passes_the_whole_suite(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "examples/test_sqlite_transport.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "--strict-markers",
            # A private base: pytest's clean-up of a shared /tmp/pytest-of-USER races
            # with other pytest processes (an unclosed scandir becomes an error).
            f"--basetemp={tmp_path / 'tmp'}",
            "-rs",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " failed" not in summary and " passed" in summary, summary
    # Only the kind a local database cannot suffer is left out, and it says so.
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("connection_dropped" in line for line in skipped), skipped


def test_the_example_opens_through_its_registered_scheme(tmp_path: Path) -> None:
    from examples.sqlite_transport import SCHEME, SqliteTransport
    from mkit_transport import Hash, InvalidArgument, open_transport, register_transport
    from mkit_transport.urls import scheme_target

    register_transport(SCHEME, SqliteTransport)
    assert scheme_target(SCHEME) == "examples.sqlite_transport:SqliteTransport"
    with open_transport(f"{SCHEME}://{tmp_path}/s.db?retries=0") as store:
        assert isinstance(store, SqliteTransport) and store.retry.retries == 0
        assert store.init_store() is True
        store.write_ref("refs/heads/main", Hash.of(b"x"))
        assert store.read_ref("refs/heads/main") == Hash.of(b"x")
    with pytest.raises(InvalidArgument, match="unknown option"):
        open_transport(f"{SCHEME}://{tmp_path}/s.db?colour=blue")
    with pytest.raises(InvalidArgument, match=r"expected mkit\+sqlite:///absolute"):
        open_transport(f"{SCHEME}://relative/s.db")
