"""The sync verbs on the command line: push, pull, mirror, log, show, packs verify."""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mkit_transport import FileTransport, InvalidResponse, PackKey
from mkit_transport.cli import EXIT_CODES, main
from mkit_transport.cli.store import packs_verify
from mkit_transport.cli.sync import quote_path
from mkit_transport.sync import push
from mkit_transport.sync.model import decode_record
from tests.support.sync_fixtures import describe, record_of, write_tree

REF = "refs/heads/main"
#: What each verb adds to "ref NAME is absent" when it is.
_TAIL = {
    "mirror": " on the source: nothing to mirror",
    "log": ": no history to show",
    "show": ": nothing to show",
}
ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_push_pull_log_show_mirror(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_tree(tmp_path / "src", files=10)
    url = f"mkit+file://{tmp_path / 'remote'}"
    code, out = run("push", str(src), url, REF, "--json")
    first = json.loads(out)
    assert code == 0 and first["updated"] and first["old"] is None and len(first["new"]) == 64
    code, out = run("push", str(src), url, REF)
    assert code == 0 and "(unchanged)" in out and "sent 0 objects" in out
    (src / "d0" / "e0" / "f0.txt").write_text("edit")
    code, out = run("push", str(src), url, REF, "--dry-run", "--json")
    assert json.loads(out)["objects_sent"] == 4 and json.loads(out)["updated"] is False
    assert run("push", str(src), url, REF)[0] == 0
    cache = str(tmp_path / "cache")
    code, out = run("pull", url, REF, str(tmp_path / "out"), "--cache-dir", cache, "--json")
    assert code == 0 and json.loads(out)["files"] == 13
    assert describe(tmp_path / "out") == describe(src)
    code, out = run("log", url, REF, "--json")
    rows = json.loads(out)
    assert code == 0 and [r["parent"] for r in rows] == [first["new"], None]
    code, out = run("show", url, REF, "d0", "--cache-dir", cache)
    assert code == 0 and "d0/e0/f0.txt" in out
    code, out = run("show", url, REF, "--json", "--cache-dir", cache)
    assert {r["path"] for r in json.loads(out)} >= {"run.sh", "empty/deeper", "link-in"}
    mirror_url = f"mkit+file://{tmp_path / 'mirror'}"
    code, out = run("mirror", url, mirror_url, REF, "--json")
    assert code == 0 and json.loads(out)["new"] == rows[0]["key"]
    capsys.readouterr()


def test_conflict_and_force_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"mkit+file://{tmp_path / 'remote'}"
    a = write_tree(tmp_path / "a", seed=1, files=3)
    b = write_tree(tmp_path / "b", seed=2, files=4)
    assert run("push", str(a), url, REF)[0] == 0
    assert run("refs", "write", url, REF, "0" * 64)[0] == 0  # someone moved the ref
    capsys.readouterr()
    assert run("push", str(b), url, REF)[0] == EXIT_CODES["PackNotFound"]  # unreadable tip
    assert run("push", str(b), url, REF, "--force")[0] == 0
    code, _ = run("pull", url, "refs/heads/none", str(tmp_path / "x"), "--cache-dir", "c")
    assert code == EXIT_CODES["RefNotFound"] == 22
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "absent" in err
    mirror_url = f"mkit+file://{tmp_path / 'mirror'}"
    for argv in (
        ["mirror", url, mirror_url, "refs/heads/none"],
        ["log", url, "refs/heads/none"],
        ["show", url, "refs/heads/none", "--cache-dir", str(tmp_path / "c")],
    ):
        assert run(*argv)[0] == 22, argv
        assert capsys.readouterr().err == (
            f"mkit_transport: RefNotFound: ref refs/heads/none is absent{_TAIL[argv[0]]}\n"
        )
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "f").write_text("x")
    assert run("pull", url, REF, str(dest), "--cache-dir", str(tmp_path / "c"))[0] == 1
    assert "exists" in capsys.readouterr().err


def test_push_as_a_real_subprocess(tmp_path: Path) -> None:
    url = f"mkit+file://{tmp_path / 'remote'}"
    a = write_tree(tmp_path / "a", seed=1, files=3)
    command = [sys.executable, "-m", "mkit_transport", "push", str(a), url, REF, "--json"]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and first.stderr == ""  # no progress bar: not a terminal
    (a / "new").write_text("n")
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and json.loads(second.stdout)["objects_sent"] == 2


def test_packs_verify_handler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    remote = FileTransport(tmp_path / "remote")
    src = write_tree(tmp_path / "src", files=5)
    report = push(src, remote, REF)
    assert report.new is not None
    record = decode_record(remote.download_blob(PackKey(bytes(report.new))))
    key = record.packs[-1].key
    out = io.StringIO()
    args = argparse.Namespace(url=str(tmp_path), key=key.hex(), json=True)
    assert packs_verify(args, remote, out) == 0
    data = json.loads(out.getvalue())
    assert data["key"] == key.hex() and data["entries"] == record.packs[-1].objects
    path = remote.pack_path(key)
    raw = bytearray(Path(path).read_bytes())
    raw[len(raw) // 2] ^= 1
    Path(path).write_bytes(bytes(raw))
    with pytest.raises(InvalidResponse):
        packs_verify(args, remote, io.StringIO())
    assert os.path.exists(path)


def _on_a_terminal(*argv: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal; return (status, stdout, terminal text)."""
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "mkit_transport", *argv],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if child.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            seen += data
        stdout, _ = child.communicate(timeout=timeout)  # bounded, unlike a read to EOF
        out = stdout.decode()
        status = child.wait(timeout)
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
            child.wait()
    return status, out, seen.decode().replace("\r\n", "\n")  # the tty's own newline mapping


def test_progress_bar_on_a_terminal_ends_its_line_also_on_failure(tmp_path: Path) -> None:
    url = f"mkit+file://{tmp_path / 'remote'}"
    src = write_tree(tmp_path / "src", seed=4, files=30)
    status, out, bar = _on_a_terminal("push", str(src), url, REF)
    assert status == 0 and out.startswith(f"{REF} -> ")  # the report stays on stdout
    sent = re.search(r"sent (\d+) objects", out)
    assert sent is not None
    # redrawn in place, phase by phase, ending with every object accounted for
    assert bar.startswith("\rplan ") and bar.endswith("\n")
    assert re.search(rf"\rdone +objects {sent[1]}/{sent[1]} ", bar), repr(bar)

    remote = FileTransport(tmp_path / "remote")
    record = record_of(remote, REF)
    path = Path(remote.pack_path(record.packs[-1].key))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))
    status, out, bar = _on_a_terminal(
        "pull", url, REF, str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")
    )
    assert status == EXIT_CODES["InvalidResponse"] and out == ""
    assert bar.startswith("\r")  # the bar was drawn, then the error on a line of its own
    assert "\nmkit_transport: InvalidResponse: pack " in bar, repr(bar)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("name", "printed"),
    [
        ("plain.txt", "plain.txt"),
        ("ünïcødé ok", "ünïcødé ok"),  # valid UTF-8 and spaces: as is
        ("a\nb", '"a\\nb"'),
        ("tab\there", '"tab\\there"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        (b"\xff\xe9.bin".decode("utf-8", "surrogateescape"), '"\\377\\351.bin"'),
        ("bell\x07del\x7f", '"bell\\adel\\177"'),
    ],
)
def test_quote_path(name: str, printed: str) -> None:
    assert quote_path(name) == printed


def test_show_prints_one_line_per_entry_whatever_the_names(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for raw in (b"a\nb", b"\xff.txt", b"ok.txt"):
        (src / os.fsdecode(raw)).write_bytes(b"x")
    url = f"mkit+file://{tmp_path / 'remote'}"
    push(src, FileTransport(tmp_path / "remote"), REF)
    code, out = run("show", url, REF)
    assert code == 0
    # sorted by the names' bytes, as in the tree objects
    names = [line.split("  ")[-1] for line in out.splitlines()]
    assert names == ['"a\\nb"', "ok.txt", '"\\377.txt"']
    code, out = run("show", url, REF, "--json")
    assert sorted(row["path"] for row in json.loads(out)) == ["a\nb", "ok.txt", "\udcff.txt"]
