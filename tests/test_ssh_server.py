"""The SSH server's frame loop, in-process on BytesIO and pipes, and fuzzed.

Whatever a client sends, the loop answers with well-formed frames whose error codes
are in the table, stores nothing it was not given whole and verified, and ends
(EOF, a cap, a deadline): it never hangs.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mkit_transport import FileTransport, Hash, PackKey
from mkit_transport.cli.serve_ssh import resolve_store
from mkit_transport.errors import (
    AccessDenied,
    ConnectionFailed,
    InvalidArgument,
    InvalidRef,
    InvalidResponse,
    PackNotFound,
    PayloadTooLarge,
    ProtocolError,
    RefConflict,
    RefNotFound,
    RemoteError,
    ServerError,
    TransportError,
)
from mkit_transport.protocol.ssh import (
    CHUNK_SIZE,
    CODES,
    MAX_FRAME,
    MAX_HEADER,
    VERSION,
    Disconnected,
    Frame,
    FrameReader,
    FrameTooLarge,
    decode_listing,
    encode_frame,
    encode_listing,
    error_fields,
    error_from_fields,
)
from mkit_transport.server.ssh import EXIT_CAPPED, EXIT_LOST, EXIT_OK, EXIT_PROTOCOL, Limits, serve
from mkit_transport.transports import ssh as ssh_transport


def frame(op: str, payload: bytes = b"", **fields: object) -> bytes:
    return b"".join(encode_frame(op, payload, **fields))


HELLO = frame("hello", version=VERSION, client="test")
_KEY_OBJ = paramiko.RSAKey.generate(1024)


def run(root: Path, data: bytes, limits: Limits | None = None) -> tuple[int, list[Frame]]:
    out = io.BytesIO()
    status = serve(str(root), io.BytesIO(data), out, limits=limits)
    reader = FrameReader(io.BytesIO(out.getvalue()).read)
    frames = []
    while (f := reader.read()) is not None:
        frames.append(f)
    return status, frames


def ops(frames: list[Frame]) -> list[str]:
    return [f.op if f.op != "error" else f"error:{f.fields['code']}" for f in frames]


def stored(root: Path) -> list[Path]:
    """Every file in the store except the ref lock."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "refs.lock")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


def upload(data: bytes, *, key: PackKey | None = None, total: int | None = None) -> bytes:
    key = key or PackKey.of(data)
    parts = [frame("put", key=key.hex(), total=len(data) if total is None else total)]
    for start in range(0, len(data), 1000):
        parts.append(frame("chunk", data[start : start + 1000], offset=start, last=False))
    parts.append(frame("chunk", offset=len(data), last=True))
    return b"".join(parts)


# -- the happy path, in process ---------------------------------------------------------


def test_a_session_round_trip(root: Path) -> None:
    data = os.urandom(5000)
    key = PackKey.of(data)
    value = Hash.of(b"v")
    status, frames = run(
        root,
        HELLO
        + frame("has", key=key.hex())
        + upload(data)
        + frame("has", key=key.hex())
        + frame("get", key=key.hex(), offset=1234)
        + frame("update-ref", name="refs/a", condition="missing", expected=None, value=value.hex())
        + frame(
            "update-ref",
            name="refs/a",
            condition="match",
            expected=Hash.of(b"x").hex(),
            value=value.hex(),
        )
        + frame("read-ref", name="refs/a")
        + frame("list-refs", prefix="refs")
        + frame("bye"),
    )
    assert status == EXIT_OK
    assert ops(frames) == [
        "hello",
        "exists",
        "ok",
        "exists",
        "pack",
        "chunk",
        "chunk",
        "ok",
        "error:conflict",
        "ref",
        "refs",
    ]
    assert frames[1].fields["exists"] is False and frames[3].fields["exists"] is True
    assert frames[5].payload == data[1234:] and frames[6].fields["last"] is True
    assert frames[8].fields["current"] == value.hex()
    assert frames[9].fields["value"] == value.hex()
    assert frames[10].payload == f"{value.hex()} refs/a\n".encode()
    assert FileTransport(root).download_pack(key) == data


def test_match_on_an_absent_ref_is_a_conflict_not_a_remote_error(root: Path) -> None:
    _, frames = run(
        root,
        HELLO
        + frame(
            "update-ref",
            name="refs/x",
            condition="match",
            expected=Hash.of(b"a").hex(),
            value=Hash.of(b"b").hex(),
        ),
    )
    assert ops(frames) == ["hello", "error:conflict"]
    assert frames[1].fields["current"] is None and frames[1].fields["known"] is True


# -- refused uploads: nothing stored, the connection stays in step ------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda d: upload(d, key=PackKey.of(b"other")), id="wrong-key"),
        pytest.param(lambda d: upload(d, total=len(d) + 1), id="short"),
        pytest.param(lambda d: upload(d, total=len(d) - 1), id="long"),
        pytest.param(
            lambda d: (
                frame("put", key=PackKey.of(d).hex(), total=len(d))
                + frame("chunk", d[:10], offset=0, last=False)
                + frame("chunk", d[20:], offset=20, last=False)  # a gap
                + frame("chunk", offset=len(d) - 10, last=True)
            ),
            id="gap",
        ),
        pytest.param(
            lambda d: (
                frame("put", key=PackKey.of(d).hex(), total=len(d))
                + frame("chunk", d, offset=0, last=False)
                + frame("chunk", d[:5], offset=0, last=True)
            ),  # offset rewinds
            id="rewind",
        ),
        pytest.param(
            lambda d: (
                frame("put", key=PackKey.of(d).hex(), total=len(d))
                + frame("chunk", d, offset=0, last="yes")
            ),
            id="bad-last",
        ),
    ],
)
def test_refused_upload_stores_nothing_and_stays_in_step(
    root: Path, bad: Callable[[bytes], bytes], request: pytest.FixtureRequest
) -> None:
    data = os.urandom(3000)
    status, frames = run(root, HELLO + bad(data) + frame("read-ref", name="refs/a") + frame("bye"))
    assert ops(frames)[:2] == ["hello", "error:protocol"]
    assert stored(root) == []
    if request.node.callspec.id == "bad-last":  # the end of the stream is unknowable: close
        assert (ops(frames)[2:], status) == ([], EXIT_PROTOCOL)
    else:  # drained to the last chunk: the next request is answered
        assert (ops(frames)[2:], status) == (["ref"], EXIT_OK)


def test_upload_over_the_cap_is_refused_and_closes(root: Path) -> None:
    data = os.urandom(3000)
    status, frames = run(root, HELLO + upload(data), Limits(max_upload=2000))
    assert ops(frames) == ["hello", "error:too-large"]
    assert frames[1].fields["limit"] == 2000
    assert status == EXIT_PROTOCOL
    assert stored(root) == []


def test_a_request_mid_upload_closes_the_connection(root: Path) -> None:
    data = os.urandom(3000)
    stream = frame("put", key=PackKey.of(data).hex(), total=3000) + frame(
        "chunk", data[:100], offset=0, last=False
    )
    status, frames = run(root, HELLO + stream + frame("has", key=PackKey.of(data).hex()))
    assert ops(frames) == ["hello", "error:protocol"]
    assert status == EXIT_PROTOCOL
    assert stored(root) == []


def test_eof_mid_upload_stores_nothing(root: Path) -> None:
    data = os.urandom(3000)
    status, frames = run(root, HELLO + upload(data)[:-200])
    assert ops(frames) == ["hello"]
    assert status == EXIT_LOST
    assert stored(root) == []


# -- framing -----------------------------------------------------------------------------


def test_oversized_length_is_refused_before_reading(root: Path) -> None:
    status, frames = run(root, HELLO + struct.pack(">I", MAX_FRAME + 1))
    assert ops(frames) == ["hello", "error:too-large"]
    assert status == EXIT_PROTOCOL


@pytest.mark.parametrize(
    "raw",
    [
        struct.pack(">IH", 5, 3) + b"{x}",  # header is not JSON
        struct.pack(">IH", 4, 2) + b"[]",  # not an object
        struct.pack(">IH", 2, 9),  # header longer than the frame
        struct.pack(">I", 1) + b"x",  # no room for a header
    ],
)
def test_malformed_frames_are_refused(root: Path, raw: bytes) -> None:
    _status, frames = run(root, HELLO + raw + frame("bye"))
    assert ops(frames)[0] == "hello"
    assert ops(frames)[1] == "error:protocol"
    assert stored(root) == []


def test_bad_fields_are_answered_and_the_session_goes_on(root: Path) -> None:
    status, frames = run(
        root,
        HELLO
        + frame("has", key="ABC")
        + frame("get", key=PackKey.of(b"").hex(), offset=-1)
        + frame("read-ref", name="../../etc/passwd")
        + frame(
            "update-ref",
            name="refs/a",
            condition="any",
            expected=Hash.of(b"").hex(),
            value=Hash.of(b"").hex(),
        )
        + frame("chunk", b"stray", offset=0, last=True)
        + frame("nonsense")
        + frame("get", key=PackKey.of(b"missing").hex(), offset=0)
        + frame("bye"),
    )
    assert ops(frames) == [
        "hello",
        "error:protocol",
        "error:protocol",
        "error:invalid-ref",
        "error:invalid-argument",
        "error:protocol",
        "error:protocol",
        "error:not-found",
    ]
    assert status == EXIT_OK
    assert stored(root) == []


@pytest.mark.parametrize(
    "first", [frame("has", key=PackKey.of(b"").hex()), frame("hello", version=99)]
)
def test_a_session_must_open_with_a_supported_hello(root: Path, first: bytes) -> None:
    status, frames = run(root, first + frame("bye"))
    assert ops(frames) == ["error:protocol"]
    assert status == EXIT_PROTOCOL


def test_frame_budget_closes_the_connection(root: Path) -> None:
    requests = frame("read-ref", name="refs/a") * 10
    status, frames = run(root, HELLO + requests, Limits(max_frames=5))
    assert ops(frames) == ["hello", "ref", "ref", "ref", "ref", "error:unavailable"]
    assert status == EXIT_CAPPED


def test_byte_budget_closes_the_connection(root: Path) -> None:
    data = os.urandom(5000)
    _, frames = run(root, HELLO + upload(data), Limits(max_bytes=4000))
    assert ops(frames) == ["hello", "error:unavailable"]
    assert stored(root) == []


def test_refusal_is_sent_after_the_hello(root: Path) -> None:
    out = io.BytesIO()
    status = serve(str(root), io.BytesIO(HELLO), out, refusal=AccessDenied("no"))
    reply = FrameReader(io.BytesIO(out.getvalue()).read).read()
    assert reply is not None and reply.fields["code"] == "denied"
    assert status == EXIT_PROTOCOL


# -- no slow-loris: deadlines on a real pipe -------------------------------------------------


def _serve_on_pipe(root: Path, limits: Limits) -> tuple[int, threading.Thread, list[int]]:
    read_fd, write_fd = os.pipe()
    result: list[int] = []
    rfile = os.fdopen(read_fd, "rb", buffering=0)
    thread = threading.Thread(
        target=lambda: result.append(serve(str(root), rfile, io.BytesIO(), limits=limits))
    )
    thread.start()
    return write_fd, thread, result


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        HELLO,
        HELLO + frame("has", key=PackKey.of(b"").hex())[:7],
    ],
    ids=["no-hello", "idle", "half-a-frame"],
)
def test_a_silent_client_is_dropped(root: Path, sent: bytes) -> None:
    write_fd, thread, result = _serve_on_pipe(root, Limits(idle_timeout=0.5, frame_timeout=0.3))
    try:
        os.write(write_fd, sent)
        # The pipe stays open while we wait: without the 0.5 s / 0.3 s deadlines the
        # server would read forever (its defaults are 600 s / 60 s), so "still alive
        # after 30 s" is the failure, however slow the machine.
        thread.join(timeout=30)
    finally:
        os.close(write_fd)
    assert not thread.is_alive(), "a silent client was not dropped"
    assert result == [EXIT_CAPPED]


# -- fuzzing -----------------------------------------------------------------------------------

_KEY = PackKey.of(b"fuzz")
_fields = st.dictionaries(
    st.sampled_from(
        [
            "key",
            "offset",
            "total",
            "last",
            "name",
            "prefix",
            "condition",
            "expected",
            "value",
            "version",
        ]
    ),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-5, max_value=1 << 40),
        st.sampled_from(
            [
                _KEY.hex(),
                Hash.of(b"x").hex(),
                "refs/a",
                "refs",
                "match",
                "any",
                "missing",
                "../x",
                "A" * 64,
            ]
        ),
        st.text(max_size=20),
    ),
    max_size=5,
)
_frames = st.one_of(
    st.builds(
        lambda op, payload, fields: frame(op, payload, **fields),
        st.sampled_from(
            [
                "has",
                "get",
                "put",
                "chunk",
                "read-ref",
                "update-ref",
                "list-refs",
                "hello",
                "bye",
                "error",
                "x",
            ]
        ),
        st.binary(max_size=64),
        _fields,
    ),
    st.binary(max_size=40),  # raw junk, possibly a bad length prefix
    st.builds(
        lambda n, body: struct.pack(">I", n) + body,
        st.integers(0, 1 << 32 - 1),
        st.binary(max_size=16),
    ),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_frames, max_size=12))
def test_fuzzed_frames_get_clean_errors_and_store_nothing(
    tmp_path: Path, sequence: list[bytes]
) -> None:
    root = tmp_path / f"fuzz-{os.urandom(6).hex()}"
    root.mkdir()
    status, frames = run(root, HELLO + b"".join(sequence))
    assert status in (EXIT_OK, EXIT_LOST, EXIT_PROTOCOL, EXIT_CAPPED)
    assert frames and frames[0].op == "hello"
    for reply in frames[1:]:
        assert reply.op in ("exists", "pack", "chunk", "ok", "ref", "refs", "error")
        if reply.op == "error":
            assert reply.fields["code"] in CODES and reply.fields["message"]
    # Only a ref named by the fuzzer may appear (never a pack: no fuzzed pack hashes right).
    for path in stored(root):
        assert path.name == ".ref", f"unexpected file {path}"
        assert path.read_bytes().endswith(b"\n") and len(path.read_bytes()) == 65


# -- the command line, as sshd runs it ------------------------------------------------------


def test_serve_ssh_as_a_subprocess(root: Path) -> None:
    data = os.urandom(2000)
    request = HELLO + upload(data) + frame("list-refs", prefix="") + frame("bye")
    done = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "serve", "ssh", str(root)],
        input=request,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    reader = FrameReader(io.BytesIO(done.stdout).read)
    replies = []
    while (f := reader.read()) is not None:
        replies.append(f.op)
    assert replies == ["hello", "ok", "refs"]
    assert FileTransport(root).download_pack(PackKey.of(data)) == data


def test_serve_ssh_refuses_a_path_outside_mkit_serve_root(root: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "serve", "ssh", str(root)],
        input=HELLO,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "MKIT_SERVE_ROOT": str(tmp_path / "elsewhere")},
    )
    reply = FrameReader(io.BytesIO(done.stdout).read).read()
    assert reply is not None and reply.op == "error" and reply.fields["code"] == "denied"
    assert done.returncode == EXIT_PROTOCOL


#: Printed by the child below: what ``serve ssh`` had imported by the time it ended.
_IMPORTED = """
import sys
from mkit_transport.cli.main import main
status = main(["serve", "ssh", sys.argv[1]])
modules = sorted(m for m in sys.modules if m.startswith("mkit_transport.") or m == "tenacity")
print(status, " ".join(modules), file=sys.stderr)
"""


def test_serve_ssh_starts_without_the_modules_it_never_uses(root: Path) -> None:
    """sshd starts ``serve ssh`` for every channel, so its imports are paid per connection.

    The sync layer, the other verbs' modules and tenacity were most of that start-up
    (bench/bench_ssh.py: the download's gap to ``cat`` was mostly this). A session
    still works (the round trip above), and every other verb still loads them.
    """
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTED, str(root)],
        input=HELLO + frame("list-refs", prefix="") + frame("bye"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    status, modules = done.stderr.decode().strip().split(" ", 1)
    assert status == str(EXIT_OK)
    imported = set(modules.split())
    assert "mkit_transport.server.ssh" in imported
    unused = ("sync", "cli.sync", "cli.gc", "cli.fsck", "cli.store", "cli.serve_http", "pack")
    assert not imported & {f"mkit_transport.{name}" for name in unused}
    assert "tenacity" not in imported  # it serves with retries=0: the client retries
    help_text = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "--help"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()
    for verb in ("push", "pull", "gc", "fsck", "refs", "serve"):
        assert verb in help_text


@pytest.mark.parametrize(
    ("original", "expected", "denied"),
    [
        ("python3 -m mkit_transport serve ssh repo", "ROOT/repo", False),
        ("python3 -m mkit_transport serve ssh ROOT/a/b", "ROOT/a/b", False),
        ("serve ssh /etc", None, True),
        ("serve ssh ../up", None, True),
        ("serve ssh a/../../up", None, True),
        ("serve ssh 'a b'", None, True),
        ("rm -rf /", None, True),
        ("", None, True),
    ],
)
def test_forced_mode_takes_the_path_from_the_original_command(
    tmp_path: Path, original: str, expected: str | None, denied: bool
) -> None:
    root = str(tmp_path)
    path, refusal = resolve_store(
        None, root, {"SSH_ORIGINAL_COMMAND": original.replace("ROOT", root)}
    )
    assert (refusal is not None) == denied
    if refusal is not None:
        assert isinstance(refusal, AccessDenied)
    if expected is not None:
        assert path == expected.replace("ROOT", root)


def test_mkit_serve_root_confines_a_pinned_path(tmp_path: Path) -> None:
    inside, outside = tmp_path / "srv" / "a", tmp_path / "other"
    assert resolve_store(str(inside), None, {"MKIT_SERVE_ROOT": str(tmp_path / "srv")})[1] is None
    assert isinstance(
        resolve_store(str(outside), None, {"MKIT_SERVE_ROOT": str(tmp_path / "srv")})[1],
        AccessDenied,
    )
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "link").symlink_to(outside)
    escaped = resolve_store(
        str(tmp_path / "srv" / "link"), None, {"MKIT_SERVE_ROOT": str(tmp_path / "srv")}
    )
    assert isinstance(escaped[1], AccessDenied), "a symlink out of the root is outside it"


def test_a_payload_is_not_copied_through_the_readers_buffer() -> None:
    """A payload that arrives as one piece is the frame's payload, as it is; a payload
    in many pieces, with the next frame's bytes behind it, is joined exactly."""
    payload = os.urandom(CHUNK_SIZE)
    head = encode_frame("chunk", payload, offset=0, last=False)[0]
    pieces = [bytes(head), payload]
    frame = FrameReader(lambda n: pieces.pop(0)).read()
    assert frame is not None and frame.payload is payload
    stream = b"".join(bytes(p) for p in encode_frame("chunk", payload, offset=1, last=True))
    stream += b"".join(bytes(p) for p in encode_frame("bye"))
    source = io.BytesIO(stream)
    reader = FrameReader(lambda n: source.read(min(n, 7919)))
    first, second = reader.read(), reader.read()
    assert first is not None and first.payload == payload and first.fields["offset"] == 1
    assert second is not None and second.op == "bye" and reader.read() is None


def test_wire_header_is_json_and_capped() -> None:
    head = bytes(encode_frame("has", key="k")[0])
    (length, header_len) = struct.unpack(">IH", head[:6])
    assert json.loads(head[6:]) == {"op": "has", "key": "k"}
    assert length == 2 + header_len


# -- the wire module on its own ---------------------------------------------------------------


def test_a_sender_never_builds_an_oversized_frame() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame("chunk", b"x" * MAX_FRAME, offset=0, last=False)
    with pytest.raises(FrameTooLarge):
        encode_frame("error", code="remote", message="m" * (MAX_HEADER + 1))
    assert (
        len(b"".join(encode_frame("chunk", b"x" * CHUNK_SIZE, offset=0, last=False)))
        <= MAX_FRAME + 4
    )


@pytest.mark.parametrize(
    "error",
    [
        PackNotFound("p"),
        AccessDenied("a"),
        RemoteError("r"),
        RefConflict("c", current=Hash.of(b"c")),
        RefConflict("c", current=None, known=True),
        InvalidRef("i"),
        InvalidArgument("a"),
        InvalidResponse("v"),
        RefNotFound("n", name="refs/heads/gone"),
        ProtocolError("x"),
        PayloadTooLarge("t", size=5, limit=4),
        ServerError("s", status=503),
        ConnectionFailed("f"),
    ],
)
def test_error_codes_round_trip_onto_the_taxonomy(error: TransportError) -> None:
    fields = error_fields(error)
    back = error_from_fields(Frame("error", fields))
    expected = ServerError if isinstance(error, ConnectionFailed) else type(error)
    assert type(back) is expected
    if isinstance(error, RefConflict):
        assert isinstance(back, RefConflict)
        assert (back.current, back.known) == (error.current, True)
    if isinstance(back, ServerError):
        assert back.status == 503, "an unavailable server is retried"
    if isinstance(error, PayloadTooLarge):
        assert isinstance(back, PayloadTooLarge) and (back.size, back.limit) == (5, 4)
    if isinstance(error, RefNotFound):
        assert isinstance(back, RefNotFound) and back.name == "refs/heads/gone"


def test_codes_an_older_server_sent_still_map_as_they_did() -> None:
    """A server from before invalid-argument and ref-not-found: its codes keep their class."""
    old = {"invalid-ref": InvalidRef, "remote": RemoteError, "not-found": PackNotFound}
    for code, cls in old.items():
        back = error_from_fields(Frame("error", {"code": code, "message": "m"}))
        assert type(back) is cls


def test_a_corrupt_stored_ref_crosses_the_wire_as_invalid_response(root: Path) -> None:
    """The server's store holds a malformed ref value: the client learns exactly that."""
    path = Path(FileTransport(root).ref_path("refs/heads/bad"))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a hash\n")
    _status, frames = run(
        root,
        HELLO
        + frame("read-ref", name="refs/heads/bad")
        + frame("list-refs", prefix="refs")
        + frame("bye"),
    )
    assert ops(frames) == ["hello", "error:invalid-response", "error:invalid-response"]
    back = error_from_fields(frames[1])
    assert type(back) is InvalidResponse and "malformed" in str(back)


def test_an_unknown_code_is_a_remote_error() -> None:
    back = error_from_fields(Frame("error", {"code": "from-the-future", "message": "hi"}))
    assert type(back) is RemoteError and "hi" in str(back)


def test_listing_pages_are_bounded_and_round_trip() -> None:
    entries = [(f"refs/heads/{i:05d}-{'x' * 200}", Hash.of(str(i).encode())) for i in range(9000)]
    pages = list(encode_listing(entries))
    assert len(pages) > 1 and all(len(p) <= CHUNK_SIZE for p in pages)
    assert [e for p in pages for e in decode_listing(p)] == entries


@pytest.mark.parametrize(
    "error",
    [
        paramiko.AuthenticationException("no"),
        paramiko.BadHostKeyException("h", _KEY_OBJ, _KEY_OBJ),
    ],
    ids=["auth", "host-key"],
)
def test_paramiko_refusals_map_to_access_denied(error: Exception) -> None:
    with pytest.raises(AccessDenied), ssh_transport._mapped():
        raise error


@pytest.mark.parametrize(
    "error",
    [
        paramiko.SSHException("No existing session"),
        EOFError(),
        TimeoutError(),
        OSError("reset"),
        Disconnected("x"),
    ],
)
def test_broken_connections_map_to_connection_failed(error: Exception) -> None:
    with pytest.raises(ConnectionFailed), ssh_transport._mapped():
        raise error
