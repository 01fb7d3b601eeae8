"""The CLI's conformance report: reasons a user can act on, and what was not checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkit_transport", "conformance", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )


def test_not_checked_rows_are_listed_and_strict_fails_on_them(tmp_path: Path) -> None:
    argv = ["--", "--mkit-no-backdoor", "-k", "wire_form or test_exists"]
    done = _cli(f"mkit+file://{tmp_path}", *argv)
    assert done.returncode == 0, done.stdout + done.stderr
    section = done.stdout.split("NOT CHECKED: ", 1)[1]
    assert section.startswith("1 guarantee(s) were not tested")
    assert "test_wire_form_is_65_bytes" in section
    assert "no back door" in section
    assert done.stdout.rstrip().endswith("1 passed, 0 failed, 1 not checked, 0 not applicable")

    strict = _cli(f"mkit+file://{tmp_path}", "--strict", *argv)
    assert strict.returncode == 1, strict.stdout
    assert "--strict: this fails the run" in strict.stdout


def test_what_the_store_cannot_suffer_is_not_applicable_not_unchecked(tmp_path: Path) -> None:
    """A file store has no connection to drop: its hook says so; --strict still passes."""
    done = _cli(f"mkit+file://{tmp_path}", "--strict", "--", "-k", "dropped or denied")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NOT CHECKED" not in done.stdout
    assert "  n/a  " in done.stdout
    assert done.stdout.rstrip().endswith("6 passed, 0 failed, 0 not checked, 6 not applicable")


def test_a_failure_shows_the_error_message_not_where_it_was_raised() -> None:
    script = (
        "import sys\n"
        "from mkit_transport import register_transport\n"
        "from mkit_transport.conformance.runner import run_conformance\n"
        "register_transport('mkit+ignorescas',"
        " 'tests.broken_transports:IgnoresConditionsTransport')\n"
        "sys.exit(run_conformance('mkit+ignorescas://report', json_output=False,"
        " out=sys.stdout, extra=['-k', 'test_cas_cell']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("  FAIL")]
    assert rows, done.stdout
    for row in rows:
        assert row.endswith("(RemoteError: the server ignores conditional writes (If-Match))")
