"""A hostile SSH client or server: deep JSON, unreadable headers, odd hellos, bad commands.

Each case asserts the clean answer (a protocol error frame, a taxonomy error, a
refusal in answer to the hello) and that the store did not change
(spec/SPEC-THREATS.md).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mkit_transport.errors import AccessDenied, InvalidResponse
from mkit_transport.protocol.ssh import VERSION, BadHeader, Frame, FrameReader, encode_frame
from mkit_transport.server.ssh import EXIT_OK, EXIT_PROTOCOL, serve
from mkit_transport.transports.ssh import _mapped


def frame(op: str, payload: bytes = b"", **fields: object) -> bytes:
    return b"".join(encode_frame(op, payload, **fields))


def raw_frame(header: bytes, payload: bytes = b"") -> bytes:
    """A well-framed frame (right lengths) around any header bytes."""
    return struct.pack(">IH", 2 + len(header) + len(payload), len(header)) + header + payload


HELLO = frame("hello", version=VERSION, client="test")
#: Deeper than the JSON parser's stack, well under the 16 KiB header cap.
DEEP = b"[" * 12000
UNREADABLE = [DEEP, b'{"op": ' + b"[" * 5000, b"{x}", b"\xff\xfe", b'["op"]', b'{"op": 1}']


def run(root: Path, data: bytes) -> tuple[int, list[Frame]]:
    out = io.BytesIO()
    status = serve(str(root), io.BytesIO(data), out)
    reader = FrameReader(io.BytesIO(out.getvalue()).read)
    frames = []
    while (f := reader.read()) is not None:
        frames.append(f)
    return status, frames


def ops(frames: list[Frame]) -> list[str]:
    return [f"{f.op}:{f.fields['code']}" if f.op == "error" else f.op for f in frames]


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    serve(str(store), io.BytesIO(HELLO + frame("init") + frame("bye")), io.BytesIO())
    return store


@pytest.mark.parametrize("header", UNREADABLE, ids=range(len(UNREADABLE)))
def test_an_unreadable_header_is_answered_and_the_session_goes_on(
    root: Path, header: bytes
) -> None:
    before = tree(root)
    status, frames = run(
        root, HELLO + raw_frame(header) + frame("list-refs", prefix="") + frame("bye")
    )
    assert ops(frames) == ["hello", "error:protocol", "refs"]
    assert status == EXIT_OK
    assert tree(root) == before


def test_deep_json_is_a_wire_error_not_a_recursion_error() -> None:
    reader = FrameReader(io.BytesIO(raw_frame(DEEP)).read)
    with pytest.raises(BadHeader, match="not JSON"):
        reader.read()


def test_the_client_reads_a_server_s_deep_json_as_invalid_response() -> None:
    reader = FrameReader(io.BytesIO(raw_frame(DEEP)).read)
    with pytest.raises(InvalidResponse, match="broke the protocol"), _mapped():
        reader.read()


def test_an_unreadable_header_mid_upload_closes(root: Path) -> None:
    before = tree(root)
    put = frame("put", key="ab" * 32, total=10)
    status, frames = run(root, HELLO + put + raw_frame(DEEP) + frame("bye"))
    assert ops(frames) == ["hello", "error:protocol"]
    assert status == EXIT_PROTOCOL
    assert tree(root) == before


@pytest.mark.parametrize(
    "hello",
    [
        frame("hello", version=True),
        frame("hello", version=1.0),
        frame("hello", version="1"),
        raw_frame(DEEP),
    ],
    ids=["true", "float", "string", "deep"],
)
def test_a_hello_must_carry_the_integer_version(root: Path, hello: bytes) -> None:
    before = tree(root)
    status, frames = run(root, hello + frame("init") + frame("bye"))
    assert ops(frames) == ["error:protocol"]
    assert status == EXIT_PROTOCOL
    assert tree(root) == before


@pytest.mark.parametrize("command", ["mkit serve ssh 'unclosed", 'serve ssh "x', "serve ssh x\\"])
def test_an_unparsable_original_command_is_refused_after_the_hello(
    tmp_path: Path, command: str
) -> None:
    served = tmp_path / "root"
    served.mkdir()
    env = {**os.environ, "SSH_ORIGINAL_COMMAND": command}
    done = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "serve", "ssh", "--root", str(served)],
        input=HELLO + frame("init") + frame("bye"),
        capture_output=True,
        env=env,
        timeout=120,  # a hang guard only
        check=False,
    )
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    reader = FrameReader(io.BytesIO(done.stdout).read)
    answer = reader.read()
    assert answer is not None and answer.op == "error" and answer.fields["code"] == "denied"
    assert done.returncode == EXIT_PROTOCOL
    assert list(served.iterdir()) == []  # nothing created


def test_resolve_store_refuses_an_unparsable_command(tmp_path: Path) -> None:
    from mkit_transport.cli.serve_ssh import resolve_backend_store, resolve_store

    env = {"SSH_ORIGINAL_COMMAND": "serve ssh 'x"}
    _path, refusal = resolve_store(None, str(tmp_path), env)
    assert isinstance(refusal, AccessDenied)
    _url, refused = resolve_backend_store("file:///srv", None, env)
    assert isinstance(refused, AccessDenied)
