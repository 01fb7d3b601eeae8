"""The suite as a third party meets it: its pytest plugin, and one import name.

Each test runs a fresh interpreter outside the checkout's pytest configuration, as
someone else's project would: nothing here may lean on this repository's pyproject.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

THIRD_PARTY_TEST = textwrap.dedent(
    """
    import pytest

    from mkit_transport import FileTransport
    from mkit_transport.conformance import ConformanceSuite, FileBackdoor, Harness


    class MyTransport(FileTransport):
        pass


    class TestMyTransport(ConformanceSuite):
        @pytest.fixture
        def harness(self, tmp_path):
            return Harness(
                open=lambda retry: MyTransport(tmp_path, retry=retry),
                backdoor=FileBackdoor(tmp_path),
                fresh=True,
            )


    def test_the_plugin_options_and_fixtures(mkit_url, mkit_options, pytestconfig):
        assert mkit_url == "mkit+memory://x"
        assert mkit_options == {"retries": "0"}
        assert pytestconfig.getoption("--mkit-quick") is False
    """
)


def test_the_readme_example_runs_under_strict_markers(tmp_path: Path) -> None:
    """No pytest.ini, no conftest: the plugin registers markers, options, fixtures."""
    (tmp_path / "test_mine.py").write_text(THIRD_PARTY_TEST)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "test_mine.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "--strict-markers",
            f"--basetemp={tmp_path / 'tmp'}",
            "-W",
            "error",
            "-k",
            "test_exists or test_cas_cell or plugin_options",
            "--mkit-url",
            "mkit+memory://x",
            "--mkit-option",
            "retries=0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "10 passed" in done.stdout, done.stdout
    assert "Warning" not in done.stdout + done.stderr


def test_one_import_name_from_a_checkout_root() -> None:
    """From the checkout root, without the editable install's finder, the name imports.

    The checkout's ``mkit_transport`` comes first on ``sys.path`` there, so it must
    hold ``conformance`` itself (a link to the top-level folder).
    """
    script = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        "from mkit_transport.conformance import ConformanceSuite, Harness\n"
        "import mkit_transport.conformance.plugin\n"
        "print(ConformanceSuite.__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "mkit_transport.conformance.suite\n"


def test_the_project_imports_the_suite_by_one_name() -> None:
    """Two names would make two copies of every class (a Harness that is not a Harness)."""
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("tests", "examples", "bench", "mkit_transport")
        for path in (ROOT / folder).rglob("*.py")
        if "conformance" not in path.parts[len(ROOT.parts) :][1:2]
        for line in path.read_text().splitlines()
        if line.startswith(("from conformance", "import conformance"))
    ]
    assert offenders == []
