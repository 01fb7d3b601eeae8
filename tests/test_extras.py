"""Optional dependencies: a missing extra gives one line naming it, never a traceback.

Each verb runs in a subprocess whose ``sys.modules`` blocks the optional module (an
entry of ``None`` makes ``import`` raise ``ModuleNotFoundError``, exactly as when it is
not installed), so this runs in the development venv; ``tests/test_wheel.py`` checks
the same against a real plain install from the wheel.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mkit_transport._extras import EXTRA_OF, hint, require
from mkit_transport._version import __version__
from mkit_transport.errors import InvalidArgument

ROOT = Path(__file__).resolve().parent.parent
EXTRAS: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "optional-dependencies"
]
DEADLINE = 60  # seconds per subprocess


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def _without(blocked: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where the ``blocked`` modules are not installed."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd=ROOT,
    )


def _cli_without(blocked: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    return _without(
        blocked, f"from mkit_transport.cli import main\nraise SystemExit(main({argv!r}))"
    )


def test_the_hint_table_matches_pyproject() -> None:
    for module, extra in EXTRA_OF.items():
        assert module in _names(EXTRAS[extra]), (module, extra)
    assert _names(EXTRAS["all"]) == _names(EXTRAS["server"]) | _names(EXTRAS["conformance"])
    assert _names(EXTRAS["all"]) <= _names(EXTRAS["dev"])
    # The base dependencies cover every transport: the hint table lists no client library.
    base = _names(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert {"requests", "boto3", "paramiko"} <= base
    assert not base & set(EXTRA_OF)


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gunicorn", None)
    with pytest.raises(InvalidArgument) as raised:
        require("serve http", "gunicorn")
    assert str(raised.value) == "serve http needs gunicorn: pip install 'mkit-transport[server]'"
    assert str(raised.value) == hint("serve http", "gunicorn")
    require("serve http")  # nothing needed, nothing raised


def test_a_broken_install_is_not_mistaken_for_a_missing_extra(tmp_path: Path) -> None:
    # gunicorn is there but one of its own imports fails: that error must surface as is.
    (tmp_path / "gunicorn").mkdir()
    (tmp_path / "gunicorn" / "__init__.py").write_text("import mkit_no_such_dependency\n")
    done = _without(
        [],
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from mkit_transport._extras import require\n"
        "require('serve http', 'gunicorn')\n",
    )
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'mkit_no_such_dependency'" in done.stderr


def test_serve_http_without_gunicorn_prints_one_line(tmp_path: Path) -> None:
    done = _cli_without(["gunicorn"], "serve", "http", "--root", str(tmp_path))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "mkit_transport: serve http needs gunicorn: pip install 'mkit-transport[server]'\n"
    )


@pytest.mark.parametrize("missing", ["pytest", "hypothesis"])
def test_conformance_without_its_extra_prints_one_line(missing: str, tmp_path: Path) -> None:
    done = _cli_without([missing], "conformance", f"mkit+file://{tmp_path}")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"mkit_transport: conformance needs {missing}: pip install 'mkit-transport[conformance]'\n"
    )


def test_the_conformance_package_raises_invalid_argument_without_its_extra() -> None:
    done = _without(
        ["hypothesis"],
        "from mkit_transport.errors import InvalidArgument\n"
        "try:\n"
        "    from mkit_transport.conformance.runner import run_conformance\n"
        "except InvalidArgument as error:\n"
        "    print(error)\n",
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        "the conformance suite needs hypothesis: pip install 'mkit-transport[conformance]'\n"
    )


def test_client_verbs_need_no_extra(tmp_path: Path) -> None:
    # Everything but the server and the suite runs on a plain install.
    blocked = ["gunicorn", "pytest", "hypothesis"]
    url = f"mkit+file://{tmp_path}"
    done = _cli_without(blocked, "refs", "write", url, "refs/heads/main", "00" * 32)
    assert (done.returncode, done.stderr) == (0, "")
    assert _cli_without(blocked, "refs", "list", url).stdout == f"{'00' * 32}  refs/heads/main\n"


def test_version_flag() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "--version"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    )
    assert done.stdout == f"mkit_transport {__version__}\n"
