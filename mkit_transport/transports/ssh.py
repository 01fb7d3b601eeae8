"""``mkit+ssh://user@host[:port]/path``: a store on a host reached over SSH (paramiko).

The client runs the remote command (default ``python3 -m mkit_transport serve ssh
PATH``) on an exec channel and speaks the frame protocol of
:mod:`mkit_transport.protocol.ssh` to it (spec/SPEC-SSH.md). One SSH connection carries
a small pool of channels, each a server process, so threads and an unfinished
download stream never wait for one another. Any doubt about a channel (a cut, a
timeout, a short read, exit status -1, an abandoned stream) closes it, never puts it
back in the pool: a channel is reused only when it is known to be in step.

Trust follows OpenSSH: the host key must be in known_hosts (unknown hosts are
refused unless ``host_key_policy="accept-new"``; a changed key always is), and
``~/.ssh/config`` supplies the host name, port, identity file, known_hosts file and
``StrictHostKeyChecking=accept-new`` for its host.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from typing import ClassVar, Final, Self

import paramiko

from .._version import __version__
from ..errors import (
    AccessDenied,
    ConnectionFailed,
    InvalidArgument,
    InvalidResponse,
    PayloadTooLarge,
    RemoteError,
    TransportError,
)
from ..hashes import Hash, PackKey
from ..protocol.ssh import (
    CHUNK_SIZE,
    VERSION,
    Disconnected,
    Frame,
    FrameReader,
    FrameTooLarge,
    WireError,
    decode_listing,
    decode_pack_listing,
    encode_frame,
    error_from_fields,
    field_of,
    is_valid_remote_path,
    optional_digest,
)
from ..refs import RefWriteCondition
from ..retry import RetryPolicy
from ..transport import PACK_BODY_LIMIT, PackInfo, Transport
from ..urls import pop_retry, pop_seconds, redact_url, reject_options, split_url

__all__ = ["DEFAULT_REMOTE_COMMAND", "SshTransport", "parse_ssh_url"]

DEFAULT_REMOTE_COMMAND: Final = "python3 -m mkit_transport serve ssh"
POLICIES: Final = ("reject", "accept-new")
#: Options that may also come from ``MKIT_SSH_<NAME>`` environment variables.
ENV_OPTIONS: Final = ("identity_file", "known_hosts_file", "host_key_policy", "remote_command")
#: Options a URL's query may not set (they run a command on the server or decide how
#: the host key is checked), each with the safe way to give it.
URL_REFUSED: Final[dict[str, str]] = {
    name: f"pass {name}= as a keyword argument or set MKIT_SSH_{name.upper()}"
    for name in ("remote_command", "known_hosts_file", "host_key_policy", "config_file")
}
_USER: Final = re.compile(r"[A-Za-z0-9._+][A-Za-z0-9._+-]*")
_HOST: Final = re.compile(r"[A-Za-z0-9.][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\]")
_PORT: Final = re.compile(r"[0-9]{1,5}")
#: Most channels one client keeps open at once (sshd's MaxSessions defaults to 10).
_MAX_CHANNELS: Final = 8
#: The receive window and largest SSH packet this client offers on each channel.
#: paramiko's reader thread decrypts and parses every packet in Python, and on a
#: download that thread is the bottleneck: its per-packet cost, not the cipher,
#: is what the default 32 KiB packets multiply. Larger packets from sshd, and a
#: window adjusted a tenth as often, leave it more of the GIL (issue 17). The
#: window is also what paramiko may buffer unread per channel: 8 MiB stays well
#: inside the 64 MiB a transfer may hold.
_WINDOW: Final = 8 << 20
_MAX_PACKET: Final = 256 << 10


def parse_ssh_url(url: str) -> tuple[str, str, int | None, str]:
    """Split an ``mkit+ssh://`` URL into ``(user, host, port, path)``.

    Forms: ``user@host[:port]/abs/path`` (URL form: the path keeps its ``/``) and
    ``user@host:path`` or ``user@host:port:path`` (SCP form: relative to the remote
    home unless it starts with ``/``). Anything a shell or ``ssh`` could read as
    syntax, a leading ``-`` in user or host, and ``.``/``..``/empty path segments
    are refused with :class:`InvalidArgument`.
    """
    rest = url.removeprefix("mkit+ssh://").split("?", 1)[0]
    user, at, rest = rest.partition("@")
    if not at or not _USER.fullmatch(user):
        raise InvalidArgument(
            f"{redact_url(url)!r}: an ssh URL needs user@ with [A-Za-z0-9._+-], no leading '-'"
        )
    host_end = rest.index("]") + 1 if rest.startswith("[") and "]" in rest else 0
    cut = min(
        (i for i in (rest.find("/", host_end), rest.find(":", host_end)) if i >= 0), default=-1
    )
    if cut <= 0:
        raise InvalidArgument(f"{redact_url(url)!r}: expected user@host/path or user@host:path")
    host, sep, rest = rest[:cut], rest[cut], rest[cut + 1 :]
    port: str | None = None
    if sep == "/":
        path = "/" + rest
    else:
        head, slash, tail = rest.partition("/")
        digits, colon, after = rest.partition(":")
        if _PORT.fullmatch(head) and slash:  # host:port/path
            port, path = head, "/" + tail
        elif _PORT.fullmatch(digits) and colon:  # host:port:path
            port, path = digits, after
        elif _PORT.fullmatch(rest):
            raise InvalidArgument(
                f"{redact_url(url)!r}: a port and no path (use user@host:port/path)"
            )
        else:  # host:path
            path = rest
    if not _HOST.fullmatch(host):
        shown = "" if "@" in host else f" {host!r}"  # what follows an '@' may be a secret
        raise InvalidArgument(
            f"{redact_url(url)!r}: bad host{shown} (letters, digits, '.', '-'; no leading '-')"
        )
    if port is not None and not 0 < int(port) < 65536:
        raise InvalidArgument(f"{redact_url(url)!r}: bad port {port}")
    if not is_valid_remote_path(path):
        raise InvalidArgument(
            f"{redact_url(url)!r}: bad path {path!r} (segments of [A-Za-z0-9._-], no '.', '..'"
            " or empty)"
        )
    return user, host.strip("[]"), int(port) if port else None, path


class _UnknownHost(paramiko.SSHException):
    """The host's key is not in known_hosts and the policy refuses unknown hosts."""


class _Policy(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host key, or record it in ``known_hosts`` (accept-new)."""

    def __init__(self, accept_new: bool, known_hosts: str) -> None:
        self.accept_new = accept_new
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if not self.accept_new:
            raise _UnknownHost(
                f"host key of {hostname} is not in {self.known_hosts} (unknown hosts are "
                "refused; add it, or use host_key_policy=accept-new)"
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        # Append one line (paramiko's save would rewrite the file and drop comments).
        os.makedirs(os.path.dirname(os.path.abspath(self.known_hosts)), exist_ok=True)
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Map paramiko, socket and wire failures onto the taxonomy (one place)."""
    try:
        yield
    except TransportError:
        raise
    except (paramiko.AuthenticationException, paramiko.BadHostKeyException, _UnknownHost) as e:
        raise AccessDenied(f"ssh: {e}") from e
    except FrameTooLarge as error:
        raise PayloadTooLarge(f"ssh: the server sent {error}") from error
    except WireError as error:
        raise InvalidResponse(f"ssh: the server broke the protocol: {error}") from error
    except (Disconnected, paramiko.SSHException, EOFError, OSError) as error:
        raise ConnectionFailed(f"ssh: {type(error).__name__}: {error}") from error


class _Link:
    """One exec channel running the server, after a successful hello."""

    def __init__(self, channel: paramiko.Channel, generation: int) -> None:
        self.channel = channel
        self.generation = generation
        self.reader = FrameReader(self._recv)
        self.in_step = True  # the last request's whole answer was read

    def _recv(self, size: int) -> bytes:
        data: bytes = self.channel.recv(size)
        if not data:
            # paramiko reports a cut connection as a plain EOF (exit status -1).
            status = self.exit_status()
            raise Disconnected(f"the channel closed (remote exit status {status})")
        return data

    def exit_status(self, wait: float = 1.0) -> int:
        deadline = time.monotonic() + wait
        while not self.channel.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.channel.recv_exit_status() if self.channel.exit_status_ready() else -1

    def send(self, op: str, payload: bytes | memoryview = b"", **fields: object) -> None:
        # A memoryview payload goes in as it is: paramiko's sendall slices what is left
        # after each ~32 KiB packet, free for a view but a copy of the rest for bytes.
        # (Its stubs say bytes, but Message.add_string writes any buffer as it is.)
        for piece in encode_frame(op, payload, **fields):
            self.channel.sendall(piece)  # type: ignore[arg-type]

    def read(self, *expected: str) -> Frame:
        """Read the next frame; an error frame is raised as its taxonomy error."""
        frame, length = self.read_head(*expected)
        if length:
            frame = Frame(frame.op, frame.fields, b"".join(self.reader.payload(length)))
        return frame

    def read_head(self, *expected: str) -> tuple[Frame, int]:
        """Read the next frame's header; its payload's length is left to read.

        The caller takes that many bytes from ``self.reader.payload`` before the next
        frame. An error frame is raised as its taxonomy error.
        """
        head = self.reader.read_head()
        # _recv raises Disconnected rather than return b"", so the reader never sees EOF.
        assert head is not None
        frame, length = head
        if frame.op == "error":
            self.reader.skip(length)
            self.in_step = True
            raise error_from_fields(frame)
        if frame.op not in expected:
            raise WireError(f"expected {' or '.join(expected)}, got {frame.op!r}")
        return frame, length

    def request(self, op: str, answer: str, **fields: object) -> Frame:
        self.in_step = False
        self.send(op, b"", **fields)
        frame = self.read(answer)
        self.in_step = True
        return frame

    def early_answer(self) -> None:
        """Raise the server's answer if it came before the upload ended (a refusal)."""
        if self.channel.recv_ready():
            try:
                self.read()  # an error frame raises; anything else is out of step
            finally:
                self.in_step = False  # the server closes after an early answer
            raise WireError("the server answered before the upload ended")

    def reusable(self, generation: int) -> bool:
        channel = self.channel
        return (
            self.in_step
            and generation == self.generation
            and not (channel.closed or channel.eof_received or channel.recv_ready())
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.close()


class SshTransport(Transport):
    """A transport to a store served by ``serve ssh`` on a host reached with paramiko."""

    schemes: ClassVar[tuple[str, ...]] = ("mkit+ssh",)
    # Downloads arrive at the SSH wire's speed (~100-150 MB/s over loopback), which
    # one core's BLAKE3 outruns 30-fold; paramiko's reader thread needs the rest.
    parallel_verify: ClassVar[bool] = False

    def __init__(
        self,
        user: str,
        host: str,
        path: str,
        *,
        port: int | None = None,
        identity_file: str | None = None,
        known_hosts_file: str | None = None,
        host_key_policy: str | None = None,
        remote_command: str | None = None,
        config_file: str | None = None,
        timeout: float = 60.0,
        keepalive: float = 15.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(retry=retry)
        config = _ssh_config(config_file, host)
        self.user, self.path = user, path
        self.host = str(config.get("hostname", host))
        self.port = port or int(config.get("port", 22))
        files: object = config.get("identityfile")
        first = files[0] if isinstance(files, list) and files else None
        self.identity_file = identity_file or (os.path.expanduser(first) if first else None)
        known = str(config.get("userknownhostsfile", "~/.ssh/known_hosts")).split()[0]
        self.known_hosts_file = os.path.expanduser(known_hosts_file or known)
        if host_key_policy is None:
            strict = str(config.get("stricthostkeychecking", "yes")).lower()
            host_key_policy = "accept-new" if strict == "accept-new" else "reject"
        if host_key_policy not in POLICIES:
            raise InvalidArgument(
                f"host_key_policy must be one of {POLICIES}, not {host_key_policy!r}"
            )
        self.host_key_policy = host_key_policy
        command = remote_command or DEFAULT_REMOTE_COMMAND
        quoted = shlex.quote(path)
        self.command = (
            command.replace("{path}", quoted) if "{path}" in command else f"{command} {quoted}"
        )
        self.timeout, self.keepalive = timeout, keepalive
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(_MAX_CHANNELS)
        self._client: paramiko.SSHClient | None = None
        self._generation = 0
        self._idle: list[_Link] = []

    @classmethod
    def from_url(cls, url: str, **options: object) -> Self:
        """Open ``mkit+ssh://user@host[:port]/path`` or ``mkit+ssh://user@host:path``.

        Options (keyword, URL query, or ``MKIT_SSH_<NAME>`` for the first four):
        ``identity_file``, ``known_hosts_file``, ``host_key_policy`` (``reject`` or
        ``accept-new``), ``remote_command``, ``config_file``, ``timeout``,
        ``keepalive``, ``retries``. The options in :data:`URL_REFUSED` run a command
        or decide host-key checking, so never come from the URL's query.
        """
        if not url.startswith("mkit+ssh://"):
            raise InvalidArgument(f"{redact_url(url)!r}: not an mkit+ssh:// URL")
        split_url(url, options, trusted=URL_REFUSED)  # whitespace, fragment, query
        user, host, port, path = parse_ssh_url(url)
        for name in ENV_OPTIONS:
            env = os.environ.get(f"MKIT_SSH_{name.upper()}")
            if env:
                options.setdefault(name, env)
        text = {n: options.pop(n, None) for n in (*ENV_OPTIONS, "config_file")}
        given = {n: pop_seconds(options, n, None) for n in ("timeout", "keepalive")}
        seconds = {n: s for n, s in given.items() if s is not None}
        retry = pop_retry(options)
        reject_options(url, options)
        for name, value in text.items():
            if value is not None and not isinstance(value, str):
                raise InvalidArgument(f"option {name!r} must be a string, got {value!r}")
        return cls(user, host, path, port=port, retry=retry, **text, **seconds)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"SshTransport({self.user}@{self.host}:{self.port} {self.path})"

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        try:
            if os.path.exists(self.known_hosts_file):
                client.load_host_keys(self.known_hosts_file)
            client.set_missing_host_key_policy(
                _Policy(self.host_key_policy == "accept-new", self.known_hosts_file)
            )
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=self.identity_file,
                allow_agent=self.identity_file is None,
                look_for_keys=self.identity_file is None,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
            )
            transport = client.get_transport()
            if transport is not None and self.keepalive > 0:
                transport.set_keepalive(int(max(1, self.keepalive)))
        except BaseException:
            client.close()
            raise
        return client

    def _open_link(self) -> _Link:
        with self._lock:
            while self._idle:
                link = self._idle.pop()
                if link.reusable(self._generation):
                    return link
                link.close()
            if self._client is None:
                self._client = self._connect()
            client, generation = self._client, self._generation
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionFailed("ssh: the connection is gone")
        channel = transport.open_session(
            window_size=_WINDOW, max_packet_size=_MAX_PACKET, timeout=self.timeout
        )
        link = _Link(channel, generation)
        try:
            channel.settimeout(self.timeout)
            channel.exec_command(self.command)
            link.in_step = False
            link.send("hello", version=VERSION, client=f"mkit_transport/{__version__}")
            hello = link.read("hello")
            if field_of(hello, "version", int) != VERSION:
                raise WireError(f"the server speaks version {hello.fields.get('version')}")
            link.in_step = True
        except Disconnected as error:
            link.close()
            status = link.exit_status()
            if status > 0:  # the command itself failed (not found, bad arguments...)
                stderr = channel.recv_stderr(4096).decode("utf-8", "replace").strip()
                raise RemoteError(
                    f"ssh: {self.command!r} exited with status {status}: {stderr}"
                ) from error
            raise
        except BaseException:
            link.close()
            raise
        return link

    @contextlib.contextmanager
    def _link(self) -> Iterator[_Link]:
        """Lend a channel for one verb; put it back only if its answer was read in full."""
        with self._slots, _mapped():
            link = self._open_link()
            try:
                yield link
            finally:
                with self._lock:
                    if link.reusable(self._generation):
                        self._idle.append(link)
                    else:
                        link.close()

    def _drop_connection(self, error: BaseException) -> None:
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
            client, self._client = self._client, None
        for link in idle:
            link.close()
        if client is not None:
            client.close()

    def close(self) -> None:
        """Say goodbye on idle channels and close the SSH connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for link in idle:
            with contextlib.suppress(Exception):
                link.send("bye")
        self._drop_connection(ConnectionFailed("closed"))

    # -- packs -----------------------------------------------------------------------

    def _has_pack(self, key: PackKey) -> bool:
        with self._link() as link:
            return field_of(link.request("has", "exists", key=key.hex()), "exists", bool)

    def _put_pack(self, key: PackKey, data: bytes) -> None:
        self._put_pack_stream(key, [data], len(data))

    def _repair_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        # The server checks its stored copy where the bytes are (SPEC-SSH, put repair).
        self._put_pack_stream(key, chunks, total, repair=True)

    def _put_pack_stream(
        self, key: PackKey, chunks: Iterable[bytes], total: int, *, repair: bool = False
    ) -> None:
        with self._link() as link:
            link.in_step = False  # until the answer is read; a failure drops the channel
            if repair:
                link.send("put", key=key.hex(), total=total, repair=True)
            else:
                link.send("put", key=key.hex(), total=total)
            sent = 0
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    for start in range(0, len(view), CHUNK_SIZE):
                        link.early_answer()
                        part = view[start : start + CHUNK_SIZE]  # a view: nothing is copied
                        link.send("chunk", part, offset=sent, last=False)
                        sent += len(part)
                link.send("chunk", offset=sent, last=True)
            except (OSError, EOFError, paramiko.SSHException):
                link.early_answer()  # a refusal that closed the channel explains the failure
                raise
            try:
                link.read("ok")
            except TransportError:
                # An early refusal (a total over the server's cap, answered from the put
                # header before the server closes) may only arrive once every chunk has
                # been sent; it reads just like a refusal after a drain, so never reuse a
                # channel whose upload was refused.
                link.in_step = False
                raise
            link.in_step = True

    def _get_pack(self, key: PackKey) -> bytes:
        return b"".join(self._open_pack_stream(key, 0))

    def _open_pack_stream(self, key: PackKey, offset: int) -> Iterator[bytes]:
        lent = self._link()
        link = lent.__enter__()
        try:
            header = link.request("get", "pack", key=key.hex(), offset=offset)
            size = field_of(header, "size", int)
            if size > PACK_BODY_LIMIT:
                raise PayloadTooLarge(f"ssh: the server offers a {size}-byte pack", size=size)
            if field_of(header, "offset", int) != offset or offset > size:
                raise InvalidResponse(f"ssh: the server answered for another offset than {offset}")
        except BaseException as error:
            lent.__exit__(type(error), error, error.__traceback__)
            raise
        return self._chunks(lent, link, offset, size)

    def _get_pack_range(self, key: PackKey, offset: int, length: int) -> bytes:
        # ``get`` with ``length`` (SPEC-SSH 3.2): the server echoes it and ends the
        # stream after the range. A server older than ranged reads ignores the field
        # and streams to the end of the pack: then exactly ``length`` bytes are taken
        # and the channel, left mid-stream, is closed rather than reused.
        lent = self._link()
        link = lent.__enter__()
        try:
            header = link.request("get", "pack", key=key.hex(), offset=offset, length=length)
            size = field_of(header, "size", int)
            echoed = header.fields.get("length")
            if offset + length > size:
                link.in_step = False  # an older server streams on
                raise self._range_past_end(key, offset, length, size)
            if field_of(header, "offset", int) != offset or echoed not in (None, length):
                link.in_step = False
                raise InvalidResponse(f"ssh: the server answered for another range than {offset}")
        except BaseException as error:
            lent.__exit__(type(error), error, error.__traceback__)
            raise
        taken = bytearray()
        stream = self._chunks(lent, link, offset, size if echoed is None else offset + length)
        with contextlib.closing(stream):
            for chunk in stream:
                taken += chunk[: length - len(taken)]
                if echoed is None and len(taken) >= length:
                    break
        return bytes(taken)

    def _chunks(
        self, lent: contextlib.AbstractContextManager[_Link], link: _Link, offset: int, size: int
    ) -> Generator[bytes]:
        link.in_step = False
        try:
            with _mapped():
                position = offset
                while True:
                    # Each chunk's payload is passed on as the pieces the channel
                    # returns, never joined into one frame-sized copy (FrameReader.read_head).
                    frame, length = link.read_head("chunk")
                    if field_of(frame, "offset", int) != position:
                        raise InvalidResponse("ssh: a download chunk is out of order")
                    last = field_of(frame, "last", bool)
                    position += length
                    if position > size:
                        raise InvalidResponse(f"ssh: the server sent more than {size} bytes")
                    if last and position != size:
                        raise InvalidResponse(f"ssh: the download ended at {position} of {size}")
                    yield from link.reader.payload(length)
                    if last:
                        link.in_step = True
                        return
        finally:
            lent.__exit__(None, None, None)

    def _list_packs(self, after: PackKey | None, limit: int) -> list[PackInfo]:
        with self._link() as link:
            frame = link.request(
                "list-packs", "packs", after=after.hex() if after is not None else None, limit=limit
            )
        try:
            return [PackInfo(*entry) for entry in decode_pack_listing(frame.payload)]
        except WireError as error:
            raise InvalidResponse(f"ssh: the server broke the protocol: {error}") from error

    def _delete_pack(self, key: PackKey) -> None:
        with self._link() as link:
            link.request("delete-pack", "ok", key=key.hex())

    # -- the store -------------------------------------------------------------------

    def _init_store(self) -> bool:
        # The only request with which the server creates a missing store.
        with self._link() as link:
            return field_of(link.request("init", "store"), "created", bool)

    # -- refs ------------------------------------------------------------------------

    def _read_ref(self, name: str) -> Hash | None:
        with self._link() as link:
            return optional_digest(link.request("read-ref", "ref", name=name), "value", Hash)

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        expected = condition.expected.hex() if condition.expected is not None else None
        with self._link() as link:
            link.request(
                "update-ref",
                "ok",
                name=name,
                condition=condition.kind,
                expected=expected,
                value=value.hex(),
            )

    def _delete_ref(self, name: str, condition: RefWriteCondition) -> None:
        expected = condition.expected.hex() if condition.expected is not None else None
        with self._link() as link:
            link.request("delete-ref", "ok", name=name, condition=condition.kind, expected=expected)

    def _list_refs(self, prefix: str) -> Iterable[tuple[str, Hash]]:
        found: list[tuple[str, Hash]] = []
        with self._link() as link:
            link.in_step = False
            link.send("list-refs", prefix=prefix)
            while True:
                page = link.read("refs")
                found.extend(decode_listing(page.payload))
                if field_of(page, "last", bool):
                    break
            link.in_step = True
        return found


def _ssh_config(path: str | None, host: str) -> paramiko.SSHConfigDict:
    """The ``~/.ssh/config`` (or ``path``) entries for ``host``; empty when there is none."""
    path = os.path.expanduser(path or os.environ.get("MKIT_SSH_CONFIG_FILE") or "~/.ssh/config")
    if not os.path.isfile(path):
        return paramiko.SSHConfigDict()
    try:
        return paramiko.SSHConfig.from_path(path).lookup(host)
    except (OSError, paramiko.ConfigParseError) as error:
        raise InvalidArgument(f"cannot read ssh config {path}: {error}") from error
