"""The command line: every verb, --json, exit codes, one-line errors, entry points."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mkit_transport import FileTransport, Hash, PackKey
from mkit_transport.cli import EXIT_CODES, main

A, B = Hash.of(b"a").hex(), Hash.of(b"b").hex()


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"mkit+file://{tmp_path}"


def test_write_read_list(url: str) -> None:
    assert run("refs", "write", url, "refs/heads/main", A) == (0, f"refs/heads/main -> {A}\n")
    assert run("refs", "read", url, "refs/heads/main") == (0, A + "\n")
    run("refs", "write", url, "refs/heads/feat/x", B)
    assert run("refs", "list", url) == (0, f"{B}  refs/heads/feat/x\n{A}  refs/heads/main\n")
    code, out = run("refs", "list", url, "--prefix", "refs/heads/feat", "--json")
    assert (code, json.loads(out)) == (0, [{"name": "x", "hash": B}])


def test_cas_flags(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("refs", "write", url, "refs/heads/main", A, "--missing")[0] == 0
    assert run("refs", "write", url, "refs/heads/main", B, "--missing")[0] == 13
    assert "RefConflict" in capsys.readouterr().err
    assert run("refs", "write", url, "refs/heads/main", B, "--expect", B)[0] == 13
    assert run("refs", "write", url, "refs/heads/main", B, "--expect", A)[0] == 0
    assert run("refs", "read", url, "refs/heads/main", "--json")[1] == (
        json.dumps({"hash": B, "name": "refs/heads/main"}, sort_keys=True) + "\n"
    )


def test_absent_ref_and_pack(url: str) -> None:
    assert run("refs", "read", url, "refs/heads/none")[0] == EXIT_CODES["absent"]
    key = PackKey.of(b"p").hex()
    assert run("packs", "exists", url, key) == (3, "no\n")


def test_packs_upload_and_exists(url: str, tmp_path: Path) -> None:
    f = tmp_path / "pack.bin"
    f.write_bytes(b"some pack")
    key = PackKey.of(b"some pack").hex()
    assert run("packs", "upload", url, str(f)) == (0, key + "\n")
    assert run("packs", "exists", url, key, "--json") == (
        0,
        json.dumps({"exists": True, "key": key}, sort_keys=True) + "\n",
    )


@pytest.mark.parametrize(
    ("argv", "code", "name"),
    [
        (["refs", "read", "mkit+file:///tmp/x", "bad name"], 14, "InvalidRef"),
        (["refs", "read", "file:///tmp/x", "refs/heads/main"], 21, "InvalidArgument"),
        (["refs", "read", "mkit+file:///tmp/x?durable=maybe", "refs/a"], 21, "InvalidArgument"),
        (["refs", "write", "mkit+file:///tmp/x", "refs/heads/main", "NOTHEX"], 14, "InvalidRef"),
        (["packs", "exists", "mkit+file:///tmp/x", A.upper()], 14, "InvalidRef"),
    ],
)
def test_errors_are_one_line_with_their_code(
    argv: list[str], code: int, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(*argv)[0] == code == EXIT_CODES[name]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mkit_transport: {name}: ")


def test_serve_needs_exactly_one_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A usage mistake in the serve verbs is a bad argument (21), not a refusal."""
    both = ["--root", str(tmp_path), "--backend", f"mkit+file://{tmp_path}"]
    assert run("serve", "http", *both)[0] == EXIT_CODES["InvalidArgument"]
    assert run("serve", "ssh")[0] == EXIT_CODES["InvalidArgument"]
    assert run("serve", "ssh", str(tmp_path), "--root", str(tmp_path))[0] == 21
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(e.startswith("mkit_transport: InvalidArgument: ") for e in err)


def test_a_corrupt_stored_ref_exits_as_invalid_response(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(FileTransport(tmp_path).ref_path("refs/heads/main"))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a hash\n")
    assert run("refs", "read", f"mkit+file://{tmp_path}", "refs/heads/main")[0] == 17
    assert capsys.readouterr().err.startswith("mkit_transport: InvalidResponse: ")


def test_symlink_escape_is_remote_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "store/refs").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "store/refs/x").symlink_to(tmp_path / "out")
    assert run("refs", "write", f"mkit+file://{tmp_path}/store", "refs/x/y", A)[0] == 12
    assert list((tmp_path / "out").iterdir()) == []


def test_help_documents_exit_codes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name, code in EXIT_CODES.items():
        assert f"{code:>3}  {name}" in out


def test_real_subprocess(url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "refs", "write", url, "refs/heads/x", A],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkit_transport",
            "refs",
            "write",
            url,
            "refs/heads/x",
            B,
            "--missing",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 13
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert FileTransport(url.removeprefix("mkit+file://")).read_ref("refs/heads/x") == Hash.of(b"a")


def test_usage_error_exit_code() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "refs", "frobnicate"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2


@pytest.mark.slow
def test_conformance_command_prints_a_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkit_transport",
            "conformance",
            f"mkit+file://{tmp_path}",
            "--",
            "--mkit-quick",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"^  ok +races ", proc.stdout, re.MULTILINE), proc.stdout
    assert "0 failed" in proc.stdout and "NOT CHECKED" not in proc.stdout


@pytest.mark.slow
def test_conformance_command_json_and_failure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkit_transport",
            "conformance",
            "mkit+memory://",
            "--json",
            "--",
            "--mkit-quick",
            "-k",
            "refs or cas",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["counts"]["failed"] == 0
    assert report["counts"]["passed"] > 50
    bad = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "conformance", "mkit+nosuch://x"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode != 0


@pytest.mark.slow
def test_pytest_entry_point(tmp_path: Path) -> None:
    root = Path(__file__).parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "conformance",
            "--mkit-url",
            f"mkit+file://{tmp_path}",
            "--mkit-quick",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
