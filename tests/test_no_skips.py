"""The skip guard (tests/support/no_skips.py) turns a skipped test into a red run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.support.no_skips"]\n')
    (tmp_path / "test_it.py").write_text(body)
    return subprocess.run(
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
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("def test_ok():\n    assert True\n", 0),
        ("import pytest\ndef test_s():\n    pytest.skip('no sshd')\n", 1),
        ("import pytest\n@pytest.mark.skip(reason='later')\ndef test_s():\n    pass\n", 1),
        ("import pytest\ndef test_na():\n    pytest.skip('not applicable: no connection')\n", 0),
    ],
    ids=["pass", "skip-call", "skip-mark", "not-applicable"],
)
def test_a_skip_fails_the_run(tmp_path: Path, body: str, code: int) -> None:
    result = _run(tmp_path, body)
    assert result.returncode == code, result.stdout + result.stderr
    if code:
        assert "skipped tests fail the run" in result.stdout
