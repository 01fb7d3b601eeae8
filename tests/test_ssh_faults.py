"""SSH against a real sshd when things go wrong: cuts, untrusted hosts, wrong keys.

The fault proxy sits between the client and sshd and cuts the TCP connection after
a number of bytes; paramiko then sees a short read (exit status -1) or a closed
socket, which must be ConnectionFailed: the base reconnects and retries, and the
store never holds a partial pack.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mkit_transport import (
    AccessDenied,
    ConnectionFailed,
    FileTransport,
    Hash,
    InvalidArgument,
    InvalidResponse,
    PackKey,
    PayloadTooLarge,
    RemoteError,
    RetryPolicy,
    open_transport,
)
from mkit_transport import transport as transport_module
from mkit_transport.hashes import Hasher
from mkit_transport.transports.ssh import SshTransport
from testbed.ssh_server import SshServer
from testbed.waiting import wait_until
from tests.support.faultproxy import FaultProxy

MIB = 1 << 20


@pytest.fixture
def proxy(sshd: SshServer) -> Iterator[FaultProxy]:
    with FaultProxy(sshd.host, sshd.port) as running:
        yield running


def _leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and ".tmp." in p.name]


def _wait_no_leftovers(root: Path) -> list[str]:
    """The cut connection's server process cleans up as it exits: give it a moment."""
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not _leftovers(root), 60, "temp files removed")
    return _leftovers(root)


def _open(
    sshd: SshServer, root: Path, sleeps: list[float], port: int | None = None, **extra: object
) -> SshTransport:
    options = sshd.options(timeout=60)  # a hang guard only: cuts and refusals are immediate
    if port is not None:  # a proxy: the same host key, on the proxy's port
        trusted = sshd.directory / f"known_hosts.{port}"
        options["known_hosts_file"] = sshd.known_hosts_for(port, trusted)
    options.update(extra)
    transport = open_transport(
        sshd.url(root, port=port), retry=RetryPolicy(sleep=sleeps.append), **options
    )
    assert isinstance(transport, SshTransport)
    return transport


# -- cut connections --------------------------------------------------------------------


def test_upload_cut_midway_reconnects_and_stores_once(sshd: SshServer, proxy: FaultProxy) -> None:
    root = sshd.store("cut-upload")
    data = os.urandom(8 * MIB)
    key = PackKey.of(data)
    sleeps: list[float] = []
    proxy.set_fault("close", after_bytes=2 * MIB, direction="up", count=1)
    with _open(sshd, root, sleeps, port=proxy.port) as transport:
        transport.upload_pack_stream(
            key, [data[i : i + MIB] for i in range(0, len(data), MIB)], len(data)
        )
        assert transport.download_pack(key) == data
    assert sleeps == [1], "one cut, one retry"
    assert proxy.accepted == 2, "the retry reconnected"
    assert FileTransport(root).download_pack(key) == data
    assert _wait_no_leftovers(root) == []


def test_upload_cut_without_retries_stores_nothing(sshd: SshServer, proxy: FaultProxy) -> None:
    root = sshd.store("cut-upload-final")
    data = os.urandom(6 * MIB)
    key = PackKey.of(data)
    proxy.set_fault("reset", after_bytes=3 * MIB, direction="up", count=1)
    with (
        _open(sshd, root, [], port=proxy.port, retries=0) as transport,
        pytest.raises(ConnectionFailed),
    ):
        transport.upload_pack(data, key)
    assert _wait_no_leftovers(root) == []
    assert not FileTransport(root).pack_exists(key)
    assert not list(root.rglob(key.hex()))


def test_download_cut_midway_resumes(sshd: SshServer, proxy: FaultProxy) -> None:
    root = sshd.store("cut-download")
    data = os.urandom(8 * MIB)
    key = PackKey.of(data)
    FileTransport(root).upload_pack(data, key)
    sleeps: list[float] = []
    proxy.set_fault("close", after_bytes=3 * MIB, direction="down", count=1)
    with _open(sshd, root, sleeps, port=proxy.port) as transport:
        assert b"".join(transport.download_pack_stream(key)) == data
    assert sleeps == [1]
    assert proxy.accepted == 2


def test_a_download_is_verified_without_blake3s_thread_pool(
    sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SSH stream is far slower than one core's BLAKE3, and paramiko's reader
    thread needs the CPU the pool's threads would take (bench/bench_ssh.py)."""
    root = sshd.store("verify-one-thread")
    data = os.urandom(3 * MIB)
    key = PackKey.of(data)
    FileTransport(root).upload_pack(data, key)
    asked: list[bool] = []

    class Recording(Hasher):
        __slots__ = ()

        def __init__(self, *, parallel: bool = False) -> None:
            asked.append(parallel)
            super().__init__(parallel=parallel)

    monkeypatch.setattr(transport_module, "Hasher", Recording)
    with _open(sshd, root, []) as transport:
        assert b"".join(transport.download_pack_stream(key)) == data
    assert asked == [False]


def test_whole_download_cut_is_retried(sshd: SshServer, proxy: FaultProxy) -> None:
    root = sshd.store("cut-download-whole")
    data = os.urandom(4 * MIB)
    key = PackKey.of(data)
    FileTransport(root).upload_pack(data, key)
    sleeps: list[float] = []
    proxy.set_fault("reset", after_bytes=1 * MIB, direction="down", count=1)
    with _open(sshd, root, sleeps, port=proxy.port) as transport:
        assert transport.download_pack(key) == data
    assert sleeps == [1]


def test_cut_during_a_ref_write_is_retried(sshd: SshServer, proxy: FaultProxy) -> None:
    root = sshd.store("cut-ref")
    sleeps: list[float] = []
    with _open(sshd, root, sleeps, port=proxy.port) as transport:
        transport.write_ref("refs/heads/a", Hash.of(b"1"))
        proxy.set_fault("close", after_bytes=0, direction="up", count=1)
        # The open connection keeps working; cut it by force, as a dead network would.
        transport._drop_connection(ConnectionFailed("test"))
        transport.write_ref("refs/heads/a", Hash.of(b"2"))
        assert transport.read_ref("refs/heads/a") == Hash.of(b"2")
    assert sleeps == [1]


def test_blackhole_times_out_as_connection_failed(sshd: SshServer) -> None:
    root = sshd.store("blackhole")
    with FaultProxy(sshd.host, sshd.port) as hole:
        hole.set_fault("blackhole")
        started = time.monotonic()
        with (
            _open(sshd, root, [], port=hole.port, retries=0, timeout=1) as transport,
            pytest.raises(ConnectionFailed),
        ):
            transport.read_ref("refs/heads/x")
        # The 1 s timeout gives up in seconds; the 60 s of _open's options (or none
        # at all) would not: a bound far from both, so only a lost timeout fails it.
        assert time.monotonic() - started < 45, "the 1 s timeout was not applied"


def test_refused_connection_is_retried_then_fails(sshd: SshServer) -> None:
    root = sshd.store("refused")
    sleeps: list[float] = []
    with FaultProxy(sshd.host, sshd.port) as refusing:
        refusing.set_fault("refuse")
        with (
            _open(sshd, root, sleeps, port=refusing.port, retries=2) as transport,
            pytest.raises(ConnectionFailed),
        ):
            transport.read_ref("refs/heads/x")
        assert refusing.accepted == 3
    assert sleeps == [1, 2]


# -- trust and authentication ----------------------------------------------------------


def test_unknown_host_key_is_refused_and_not_retried(sshd: SshServer, tmp_path: Path) -> None:
    root = sshd.store("unknown-host")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    sleeps: list[float] = []
    with (
        _open(sshd, root, sleeps, known_hosts_file=str(empty)) as transport,
        pytest.raises(AccessDenied, match="not in"),
    ):
        transport.read_ref("refs/heads/x")
    assert sleeps == []
    assert empty.read_text() == "", "reject never records a key"


def test_missing_known_hosts_file_refuses(sshd: SshServer, tmp_path: Path) -> None:
    root = sshd.store("no-known-hosts")
    with (
        _open(sshd, root, [], known_hosts_file=str(tmp_path / "absent")) as transport,
        pytest.raises(AccessDenied),
    ):
        transport.pack_exists(PackKey.of(b""))
    assert not (tmp_path / "absent").exists()


def test_accept_new_records_the_key_then_trusts_it(sshd: SshServer, tmp_path: Path) -> None:
    root = sshd.store("accept-new")
    known = tmp_path / "sub" / "known_hosts"
    with _open(sshd, root, [], known_hosts_file=str(known), host_key_policy="accept-new") as t:
        t.write_ref("refs/heads/n", Hash.of(b"n"))
    recorded = known.read_text()
    assert recorded.startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    host_pub = (sshd.directory / "host_ed25519.pub").read_text().split()[1]
    assert host_pub in recorded
    with _open(sshd, root, [], known_hosts_file=str(known)) as again:  # reject, now known
        assert again.read_ref("refs/heads/n") == Hash.of(b"n")
    assert known.read_text() == recorded


def test_changed_host_key_is_refused_even_with_accept_new(sshd: SshServer, tmp_path: Path) -> None:
    root = sshd.store("changed-host")
    other = (sshd.directory / "other_ed25519.pub").read_text().split()
    lying = tmp_path / "known_hosts"
    lying.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    sleeps: list[float] = []
    with (
        _open(sshd, root, sleeps, known_hosts_file=str(lying), host_key_policy="accept-new") as t,
        pytest.raises(AccessDenied),
    ):
        t.read_ref("refs/heads/x")
    assert sleeps == []
    assert lying.read_text().count("\n") == 1


def test_wrong_client_key_is_access_denied_not_retried(sshd: SshServer) -> None:
    root = sshd.store("wrong-key")
    sleeps: list[float] = []
    with (
        _open(sshd, root, sleeps, identity_file=sshd.other_key) as transport,
        pytest.raises(AccessDenied),
    ):
        transport.write_ref("refs/heads/x", Hash.of(b"x"))
    assert sleeps == []
    assert FileTransport(root).read_ref("refs/heads/x") is None


# -- the remote side refusing ---------------------------------------------------------------


def test_missing_remote_command_is_remote_error(sshd: SshServer) -> None:
    root = sshd.store("no-command")
    sleeps: list[float] = []
    with (
        _open(sshd, root, sleeps, remote_command="/nonexistent/mkit-serve") as transport,
        pytest.raises(RemoteError, match="status 127"),
    ):
        transport.read_ref("refs/heads/x")
    assert sleeps == []


def test_missing_store_directory_is_remote_error(sshd: SshServer) -> None:
    with (
        _open(sshd, sshd.stores / "never-created", []) as transport,
        pytest.raises(RemoteError, match="no store"),
    ):
        transport.read_ref("refs/heads/x")
    assert not (sshd.stores / "never-created").exists()


def test_forced_command_ignores_the_requested_command(sshd: SshServer) -> None:
    sshd.store("forced-probe")
    url = f"mkit+ssh://{sshd.user}@{sshd.host}:{sshd.port}:forced-probe"
    options = {
        **sshd.options(forced=True),
        "remote_command": "rm -rf / --no-preserve-root ; serve ssh",
    }
    with open_transport(url, **options) as transport:
        transport.write_ref("refs/heads/f", Hash.of(b"f"))
    assert FileTransport(sshd.stores / "forced-probe").read_ref("refs/heads/f") == Hash.of(b"f")


@pytest.mark.parametrize("path", ["/etc", "/tmp", "../escape"])
def test_forced_command_refuses_paths_outside_its_root(sshd: SshServer, path: str) -> None:
    url = f"mkit+ssh://{sshd.user}@{sshd.host}:{sshd.port}:inside"
    # The URL is valid; a hostile client asks for another path in its command line.
    options = {**sshd.options(forced=True), "remote_command": f"echo {{path}} ; serve ssh {path}"}
    sleeps: list[float] = []
    with (
        open_transport(url, retry=RetryPolicy(sleep=sleeps.append), **options) as transport,
        pytest.raises(AccessDenied, match="inside the served root"),
    ):
        transport.write_ref("refs/heads/x", Hash.of(b"x"))
    assert sleeps == []


def test_upload_over_the_server_cap_is_refused_early(sshd: SshServer) -> None:
    root = sshd.store("server-cap")
    data = os.urandom(3 * MIB)
    key = PackKey.of(data)
    capped = f"{sshd.remote_command} --max-upload {MIB}"
    sleeps: list[float] = []
    with _open(sshd, root, sleeps, remote_command=capped) as transport:
        with pytest.raises(PayloadTooLarge):
            transport.upload_pack(data, key)
        small = os.urandom(1000)
        transport.upload_pack(small, PackKey.of(small))  # the client is still usable
        assert transport.download_pack(PackKey.of(small)) == small
    assert sleeps == []
    assert not FileTransport(root).pack_exists(key)


# -- a lying server: the client checks what it is sent ---------------------------------------

_LIAR = r"""
import os, struct, sys
from mkit_transport.protocol.ssh import FrameReader, encode_frame
mode = sys.argv[1]
reader = FrameReader(lambda n: os.read(0, n))
def send(op, payload=b"", **fields):
    for piece in encode_frame(op, payload, **fields):
        os.write(1, piece)
while (frame := reader.read()) is not None:
    if frame.op == "hello":
        send("hello", version=1, server="liar", max_upload=1)
    elif mode == "huge":
        os.write(1, struct.pack(">I", (1 << 20) + 1))
    elif mode == "junk":
        os.write(1, struct.pack(">IH", 4, 2) + b"[]")
    elif mode == "listing":
        send("refs", b"not a listing line\n", last=True)
    elif mode == "offset":
        send("pack", size=10, offset=0)
        send("chunk", b"12345", offset=3, last=False)
    elif mode == "short":
        send("pack", size=10, offset=0)
        send("chunk", b"12345", offset=0, last=True)
    elif mode == "wrong-bytes":
        send("pack", size=5, offset=0)
        send("chunk", b"12345", offset=0, last=True)
    elif mode == "bad-value":
        send("ref", value="ABC")
"""


@pytest.mark.parametrize(
    ("mode", "verb", "error"),
    [
        ("huge", "read", PayloadTooLarge),
        ("junk", "read", InvalidResponse),
        ("listing", "list", InvalidResponse),
        ("offset", "download", InvalidResponse),
        ("short", "download", InvalidResponse),
        ("wrong-bytes", "download", InvalidResponse),
        ("bad-value", "read", InvalidResponse),
    ],
)
def test_a_lying_server_is_caught_and_not_retried(
    sshd: SshServer, tmp_path: Path, mode: str, verb: str, error: type[Exception]
) -> None:
    liar = tmp_path / "liar.py"
    liar.write_text(_LIAR)
    sleeps: list[float] = []
    key = PackKey.of(b"anything")
    with (
        _open(
            sshd, sshd.store("liar"), sleeps, remote_command=f"{sys.executable} {liar} {mode} #"
        ) as t,
        pytest.raises(error),
    ):
        if verb == "read":
            t.read_ref("refs/heads/x")
        elif verb == "list":
            t.list_refs("refs")
        else:
            b"".join(t.download_pack_stream(key))
    assert sleeps == []


_OLD_SERVER = r"""
import os, sys
from mkit_transport.protocol.ssh import FrameReader, encode_frame
mode = sys.argv[1]
data = b"0123456789"
reader = FrameReader(lambda n: os.read(0, n))
def send(op, payload=b"", **fields):
    for piece in encode_frame(op, payload, **fields):
        os.write(1, piece)
while (frame := reader.read()) is not None:
    if frame.op == "hello":
        send("hello", version=1, server="old", max_upload=1)
    elif frame.op == "get":
        offset = frame.fields["offset"]
        if mode == "old":  # older than ranged reads: ignores length, streams to the end
            send("pack", size=len(data), offset=offset)
        else:  # echoes length but sends past the range
            send("pack", size=len(data), offset=offset, length=frame.fields["length"])
        for start in range(offset, len(data), 3):
            send("chunk", data[start : start + 3], offset=start, last=False)
        send("chunk", offset=len(data), last=True)
"""


def test_a_range_from_a_server_ignoring_length_is_cut_exactly(
    sshd: SshServer, tmp_path: Path
) -> None:
    old = tmp_path / "old.py"
    old.write_text(_OLD_SERVER)
    key = PackKey.of(b"0123456789")
    sleeps: list[float] = []
    command = f"{sys.executable} {old} old #"
    with _open(sshd, sshd.store("old"), sleeps, remote_command=command) as t:
        assert t.read_pack_range(key, 2, 4) == b"2345"  # the channel is left mid-stream...
        assert t.read_pack_range(key, 0, 10) == b"0123456789"  # ...and not reused
        assert t.read_pack_range(key, 9, 1) == b"9"
        with pytest.raises(InvalidArgument, match=r"\(10 bytes\)"):
            t.read_pack_range(key, 8, 5)
        assert t.read_pack_range(key, 1, 2) == b"12"
    assert sleeps == []


def test_a_server_sending_past_the_range_it_echoed_is_caught(
    sshd: SshServer, tmp_path: Path
) -> None:
    liar = tmp_path / "liar.py"
    liar.write_text(_OLD_SERVER)
    sleeps: list[float] = []
    command = f"{sys.executable} {liar} overrun #"
    with (
        _open(sshd, sshd.store("overrun"), sleeps, remote_command=command) as t,
        pytest.raises(InvalidResponse, match="more than"),
    ):
        t.read_pack_range(PackKey.of(b"0123456789"), 2, 4)
    assert sleeps == []
