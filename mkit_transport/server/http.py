"""The reference HTTP pack server: a WSGI application over any :class:`Transport`.

The wire protocol is spec/SPEC-HTTP.md. Each project named in the first path
segment is one store, opened by a factory (default: a :class:`FileTransport` at
``ROOT/NAME``; any transport URL with the project appended as a last path
segment). The server is a thin relay, and the policy stays where it lives:

* every name, key and header is validated here, before the backend sees it;
* an upload goes through the backend's ``upload_pack_stream``, which hashes the
  body as it arrives and commits only a complete body that hashes to its key, so
  a cut or wrong upload leaves nothing;
* a ref condition is decided atomically by the backend, so any number of worker
  processes or hosts over one store stay correct;
* a download relays the stored bytes unverified (``relay_pack_stream``):
  the client verifies end to end, and a corrupt pack must reach it as such rather
  than as a cut connection it would retry.

Run it with ``python -m mkit_transport serve http`` (gunicorn, see
:mod:`mkit_transport.cli.serve_http`) or under any WSGI server.
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, NoReturn
from urllib.parse import parse_qs, urlsplit

from ..errors import (
    InvalidRef,
    InvalidResponse,
    RefConflict,
    TransportError,
)
from ..hashes import Hash, PackKey
from ..protocol.http import failure_for, status_of
from ..refs import (
    REF_VALUE_SIZE,
    RefWriteCondition,
    decode_ref_value,
    encode_ref_value,
    normalize_prefix,
    validate_ref_name,
)
from ..transport import MAX_LIST_PAGE, PACK_BODY_LIMIT, Transport
from ..transports.file import FileTransport
from ..urls import PROJECT_NAME_RE, open_transport

__all__ = [
    "PackServer",
    "backend_factory",
    "file_factory",
]

log = logging.getLogger("mkit_transport.server.http")

_READ_SIZE: Final = 1 << 20
_NO_ROUTE: Final = (
    "no such route; paths are /PROJECT/packs[/KEY], /PROJECT/refs/... or /PROJECT/init"
)
_HEX_RE: Final = re.compile(r"[0-9a-f]{64}")
_LIMIT_RE: Final = re.compile(r"[0-9]{1,5}")
_RANGE_RE: Final = re.compile(r"bytes=(\d{1,19})-(\d{1,19})?")
_IF_MATCH_RE: Final = re.compile(r'"([0-9a-f]{64})"')
_REASONS: Final = {
    200: "OK",
    201: "Created",
    204: "No Content",
    206: "Partial Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    416: "Range Not Satisfiable",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
Factory = Callable[[str], Transport]


class HttpFailure(Exception):
    """A request fails with ``status`` and a stable error ``code`` (the JSON body)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        extra: dict[str, object] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}
        self.headers = headers or []


def _backend_failure(error: TransportError) -> HttpFailure:
    """Map what the backend raised onto a status and code (the table in protocol/http.py).

    Input was validated before the backend saw it, so an ``InvalidResponse`` from the
    backend means a malformed *stored* value (``invalid_stored_value``).
    """
    message = str(error)
    status, code = failure_for(error)
    if isinstance(error, RefConflict):
        extra: dict[str, object] = {}
        headers = []
        if error.known:
            extra["current"] = error.current.hex() if error.current is not None else None
            if error.current is not None:
                headers.append(("ETag", f'"{error.current.hex()}"'))
        return HttpFailure(status, code, message, extra=extra, headers=headers)
    if code == "remote_error":
        message = f"{type(error).__name__}: {message}"
    return HttpFailure(status, code, message)


def _failure(code: str, message: str, **more: Any) -> HttpFailure:
    """A failure with ``code``, sent with the status the shared table gives it."""
    return HttpFailure(status_of(code), code, message, **more)


def _fail(code: str, message: str) -> NoReturn:
    raise _failure(code, message)


def _cut(chunks: Iterator[bytes], length: int) -> Iterator[bytes]:
    """Yield the first ``length`` bytes of ``chunks``, then close the stream."""
    left = length
    try:
        for chunk in chunks:
            if len(chunk) >= left:
                yield chunk[:left]
                return
            left -= len(chunk)
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def file_factory(root: str | os.PathLike[str]) -> Factory:
    """Serve project NAME from a file store at ``root/NAME``."""
    base = os.path.abspath(os.fspath(root))
    return lambda name: FileTransport(os.path.join(base, name))


def backend_factory(url: str, **options: object) -> Factory:
    """Serve project NAME from the transport at ``url`` with ``/NAME`` appended to its path.

    ``mkit+file:///srv/store`` serves NAME from ``/srv/store/NAME``;
    ``mkit+s3://host/bucket/prefix`` from keys under ``prefix/NAME/``. The URL is
    opened once here, so a bad one fails at start-up rather than per request.
    """
    open_transport(url, **options).close()
    parts = urlsplit(url)

    def open_project(name: str) -> Transport:
        path = parts.path.rstrip("/") + "/" + name
        query = f"?{parts.query}" if parts.query else ""
        return open_transport(f"{parts.scheme}://{parts.netloc}{path}{query}", **options)

    return open_project


class PackServer:
    """The WSGI application: packs and refs of many projects over one backend kind.

    ``read_token`` and ``write_token`` are optional bearer tokens: with a read
    token, every request but the health check needs it (or the write token); with
    a write token, every write needs it. Tokens are compared in constant time and
    never logged.
    """

    def __init__(
        self,
        factory: Factory,
        *,
        read_token: str | None = None,
        write_token: str | None = None,
        max_pack_bytes: int = PACK_BODY_LIMIT,
        max_projects: int = 1024,
    ) -> None:
        self.factory = factory
        self.read_token = read_token or None
        self.write_token = write_token or None
        self.max_pack_bytes = max_pack_bytes
        self.max_projects = max_projects
        self._stores: dict[str, Transport] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"PackServer(read_token={'***' if self.read_token else None}, "
            f"write_token={'***' if self.write_token else None})"
        )

    def store(self, project: str) -> Transport:
        """The backend for ``project`` (opened once per process, kept while used)."""
        with self._lock:
            found = self._stores.pop(project, None)
            if found is None:
                if len(self._stores) >= self.max_projects:
                    oldest = next(iter(self._stores))
                    self._stores.pop(oldest).close()
                try:
                    found = self.factory(project)
                except TransportError as error:
                    raise _failure(
                        "remote_error", f"cannot open the store of {project}: {error}"
                    ) from error
            self._stores[project] = found  # most recently used last
            return found

    # -- WSGI --------------------------------------------------------------------------

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request; every failure becomes a JSON error body."""
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            status, headers, body = self._route(environ, method)
        except HttpFailure as failure:
            status, headers, body = self._error(failure)
        except TransportError as error:
            status, headers, body = self._error(_backend_failure(error))
        except Exception:
            log.exception("unexpected failure on %s %s", method, environ.get("PATH_INFO"))
            status, headers, body = self._error(_failure("internal_error", "internal server error"))
        start_response(f"{status} {_REASONS.get(status, 'Unknown')}", headers)
        if method == "HEAD":  # every HEAD answer is a list (the pack check, errors)
            return [b""]
        return body

    @staticmethod
    def _error(failure: HttpFailure) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        payload = {"error": failure.code, "message": failure.message, **failure.extra}
        status, headers, body = _json(failure.status, payload)
        headers += [("Mkit-Error", failure.code), *failure.headers]
        if failure.status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="mkit"'))
        return status, headers, body

    def _route(
        self, environ: Environ, method: str
    ) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        path = environ.get("PATH_INFO", "") or "/"
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                _fail("method_not_allowed", "the health check takes GET")
            return _json(200, {"status": "ok"})
        parts = path.split("/")[1:]
        if len(parts) < 2 or not PROJECT_NAME_RE.fullmatch(parts[0]) or parts[0].endswith(".lock"):
            _fail("not_found", _NO_ROUTE)
        project, kind, rest = parts[0], parts[1], parts[2:]
        writing = method in ("PUT", "POST", "DELETE")
        self._authorize(environ, writing)
        if kind == "init" and not rest:
            if method != "POST":
                _allow("POST")
            return self._init(project)
        if kind == "packs" and len(rest) == 1:
            if not _HEX_RE.fullmatch(rest[0]):
                _fail("invalid_ref", f"not a pack key: {rest[0][:80]!r}")
            key = PackKey(bytes.fromhex(rest[0]))
            if method == "HEAD":
                return self._has_pack(project, key)
            if method == "GET":
                return self._get_pack(project, key, environ)
            if method == "PUT":
                return self._put_pack(project, key, environ)
            if method == "DELETE":
                self.store(project).delete_pack(key)
                return 204, [], []
            _allow("DELETE, GET, HEAD, PUT")
        if kind == "packs" and not rest:
            if method != "GET":
                _allow("GET")
            return self._list_packs(project, environ)
        if kind == "refs" and not rest:
            if method != "GET":
                _allow("GET")
            return self._list_refs(project, environ)
        if kind == "refs":
            name = _checked(validate_ref_name, "/".join(parts[1:]))
            if method == "GET":
                return self._get_ref(project, name)
            if method == "PUT":
                return self._put_ref(project, name, environ)
            if method == "DELETE":
                return self._delete_ref(project, name, environ)
            _allow("DELETE, GET, PUT")
        _fail("not_found", _NO_ROUTE)

    def _authorize(self, environ: Environ, writing: bool) -> None:
        if writing:
            accepted = [self.write_token or self.read_token]
        else:
            accepted = [self.read_token, self.write_token] if self.read_token else []
        tokens = [t.encode() for t in accepted if t]
        if not tokens:
            return
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            _fail("unauthorized", "this server needs a bearer token")
        given = token.strip().encode()
        if any(hmac.compare_digest(given, t) for t in tokens):
            return
        if writing and self.read_token and hmac.compare_digest(given, self.read_token.encode()):
            _fail("forbidden", "the read token does not allow writes")
        _fail("unauthorized", "the bearer token was not accepted")

    # -- the store -----------------------------------------------------------------------

    def _init(self, project: str) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        """Create the project's store if absent: 201 if created, 200 if already there."""
        created = self.store(project).init_store()
        return _json(201 if created else 200, {"project": project, "created": created})

    # -- packs ---------------------------------------------------------------------------

    def _has_pack(
        self, project: str, key: PackKey
    ) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        if self.store(project).pack_exists(key):
            return 200, [("Content-Length", "0")], [b""]
        raise _failure("pack_not_found", f"no pack {key.hex()}")

    def _get_pack(
        self, project: str, key: PackKey, environ: Environ
    ) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        offset = 0
        wanted = environ.get("HTTP_RANGE")
        if wanted is not None:
            match = _RANGE_RE.fullmatch(wanted.strip())
            if match is None:
                _fail("range_not_satisfiable", "only 'Range: bytes=N-' and 'bytes=N-M' are served")
            offset = int(match.group(1))
            if match.group(2) is not None:
                return self._get_range(project, key, offset, int(match.group(2)))
        backend = self.store(project)
        base = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes")]
        size: int | None = None
        if offset > 0:
            # Past the end is empty (HTTP-9), said before any backend is asked to seek
            # there: a huge offset fails in some, and only once the 206 is sent (a 500).
            size = backend.pack_size(key)
            if offset >= size:
                empty = [*base, ("Content-Length", "0"), ("Mkit-Range-Start", str(offset))]
                return 206, empty, [b""]
        # The length is sent so that a body cut anywhere on the way (a worker killed
        # behind a proxy that speaks HTTP/1.0 upstream, where no chunked framing
        # survives) reaches the client as short, a connection failure it resumes,
        # rather than as a clean shorter body it would take for corruption.
        # Relayed unverified: the client verifies end to end (see the module docstring).
        # The stream is opened first, so its failure (an absent pack) is the answer.
        stream = backend.relay_pack_stream(key, offset)
        try:
            length = max((backend.pack_size(key) if size is None else size) - offset, 0)
        except BaseException:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            raise
        chunks = _cut(stream, length)
        headers = [*base, ("Content-Length", str(length))]
        if wanted is None:
            return 200, headers, chunks
        return 206, [*headers, ("Mkit-Range-Start", str(offset))], chunks

    def _get_range(
        self, project: str, key: PackKey, first: int, last: int
    ) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        """Serve ``bytes=first-last``: 206 with exactly those bytes, or 416 naming the size.

        The size is asked first so a range past the end is refused before a byte is
        sent (never short data under a 206); the bytes are relayed unverified, as
        every download is, and cut at the range's end.
        """
        if last < first:
            _fail("range_not_satisfiable", f"range bytes={first}-{last} ends before it starts")
        backend = self.store(project)
        size = backend.pack_size(key)
        if last >= size:
            raise _failure(
                "range_not_satisfiable",
                f"range bytes={first}-{last} runs past the end of pack {key.hex()} ({size} bytes)",
                extra={"size": size},
                headers=[("Content-Range", f"bytes */{size}")],
            )
        length = last - first + 1
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Accept-Ranges", "bytes"),
            ("Content-Length", str(length)),
            ("Content-Range", f"bytes {first}-{last}/{size}"),
            ("Mkit-Range-Start", str(first)),
        ]
        return 206, headers, _cut(backend.relay_pack_stream(key, first), length)

    def _put_pack(
        self, project: str, key: PackKey, environ: Environ
    ) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        length = _content_length(environ)
        if length > self.max_pack_bytes:
            raise _failure(
                "payload_too_large", f"pack of {length} bytes is over {self.max_pack_bytes}"
            )
        repair = environ.get("HTTP_MKIT_REPAIR")
        if repair not in (None, "1"):
            _fail("invalid_request", "Mkit-Repair must be 1")
        backend = self.store(project)
        upload = backend.repair_pack_stream if repair == "1" else backend.upload_pack_stream
        upload(key, _body(environ, length), length)
        return 204, [], []

    # -- refs ----------------------------------------------------------------------------

    def _get_ref(
        self, project: str, name: str
    ) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        value = self.store(project).read_ref(name)
        if value is None:
            raise _failure("ref_not_found", f"no ref {name}")
        data = encode_ref_value(value)
        return (
            200,
            [
                ("Content-Type", "text/plain; charset=us-ascii"),
                ("Content-Length", str(len(data))),
                ("ETag", f'"{value.hex()}"'),
            ],
            [data],
        )

    def _put_ref(
        self, project: str, name: str, environ: Environ
    ) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        condition = _condition(environ)
        length = _content_length(environ)
        if length > 4096:
            _fail("payload_too_large", f"a ref body is {REF_VALUE_SIZE} bytes, not {length}")
        if length != REF_VALUE_SIZE:
            _fail("invalid_ref", f"a ref body is {REF_VALUE_SIZE} bytes, not {length}")
        data = b"".join(_body(environ, length))
        try:
            value = decode_ref_value(data, remote=True, name=name)
        except InvalidResponse as error:  # the client's value, not a stored one
            raise _failure("invalid_ref", str(error)) from error
        self.store(project).update_ref(name, condition, value)
        return 204, [("ETag", f'"{value.hex()}"')], []

    def _delete_ref(
        self, project: str, name: str, environ: Environ
    ) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        condition = _condition(environ)
        if condition.kind == "missing":
            raise _failure("invalid_argument", "a ref delete takes If-Match or no condition")
        self.store(project).delete_ref(name, condition)
        return 204, [], []

    def _list_packs(
        self, project: str, environ: Environ
    ) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        """One page of the pack listing: ``?limit=N`` entries after ``?after=KEY``."""
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if set(query) - {"after", "limit"} or any(len(v) != 1 for v in query.values()):
            _fail("invalid_request", "a pack listing takes one 'after' and one 'limit'")
        after = None
        if "after" in query:
            if not _HEX_RE.fullmatch(query["after"][0]):
                _fail("invalid_ref", f"not a pack key: {query['after'][0][:80]!r}")
            after = PackKey(bytes.fromhex(query["after"][0]))
        limit_text = query.get("limit", ["1000"])[0]
        if not _LIMIT_RE.fullmatch(limit_text) or not 1 <= int(limit_text) <= MAX_LIST_PAGE:
            _fail("invalid_argument", f"limit must be 1..{MAX_LIST_PAGE}, not {limit_text[:20]!r}")
        limit = int(limit_text)
        listing = self.store(project).list_packs(after=after, page_size=limit)
        packs = [
            {"key": info.key.hex(), "size": info.size, "mtime": info.mtime}
            for info in itertools.islice(listing, limit)
        ]
        return _json(200, {"packs": packs})

    def _list_refs(
        self, project: str, environ: Environ
    ) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        given = query.get("prefix", [""])
        if len(given) != 1 or set(query) - {"prefix"}:
            _fail("invalid_request", "a listing takes one 'prefix' parameter")
        prefix = _checked(normalize_prefix, given[0])
        head = prefix + "/" if prefix else ""
        refs = [
            {"name": head + ref.name, "hash": ref.hash.hex()}
            for ref in self.store(project).list_refs(prefix)
        ]
        return _json(200, {"prefix": prefix, "refs": refs})


# -- request helpers ------------------------------------------------------------------


def _json(status: int, payload: object) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
    data = json.dumps(payload, sort_keys=True).encode() + b"\n"
    return (
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        [data],
    )


def _checked(validate: Callable[[str], str], text: str) -> str:
    """Run a core validator on request input: its InvalidRef is the client's fault (400)."""
    try:
        return validate(text)
    except InvalidRef as error:
        raise _failure("invalid_ref", str(error)) from error


def _allow(methods: str) -> NoReturn:
    raise _failure("method_not_allowed", f"use {methods}", headers=[("Allow", methods)])


def _content_length(environ: Environ) -> int:
    text = environ.get("CONTENT_LENGTH") or ""
    if not text:
        _fail("length_required", "a body needs a Content-Length header")
    if not text.isdigit() or len(text) > 19:
        _fail("invalid_request", f"bad Content-Length {text[:40]!r}")
    return int(text)


def _body(environ: Environ, length: int) -> Iterator[bytes]:
    """Yield the request body in bounded chunks; stop early if the client went away.

    A short body ends the iteration early, and the backend's checked upload then
    refuses it (nothing is stored).
    """
    stream = environ["wsgi.input"]
    remaining = length
    while remaining > 0:
        try:
            chunk = stream.read(min(_READ_SIZE, remaining))
        except (OSError, ValueError):
            return
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk


def _condition(environ: Environ) -> RefWriteCondition:
    none_match = environ.get("HTTP_IF_NONE_MATCH")
    match = environ.get("HTTP_IF_MATCH")
    if none_match is not None and match is not None:
        _fail("invalid_request", "send If-None-Match or If-Match, not both")
    if none_match is not None:
        if none_match.strip() != "*":
            _fail("invalid_request", "If-None-Match must be '*'")
        return RefWriteCondition.MISSING
    if match is not None:
        found = _IF_MATCH_RE.fullmatch(match.strip())
        if found is None:
            _fail("invalid_ref", 'If-Match must be one quoted hash: "<64 lowercase hex>"')
        return RefWriteCondition.match(Hash(bytes.fromhex(found.group(1))))
    return RefWriteCondition.ANY
