"""``mkit+https://host[:port]/project``: packs and refs on an HTTP pack server.

The wire protocol is spec/SPEC-HTTP.md; the reference server is
``mkit_transport.server.http``. This module is wire code only: the base class
validates, retries, verifies digests and resolves lost CAS acknowledgements.
Every foreign failure and every failure status is mapped onto the taxonomy in one
place, :func:`_mapped`.

Plain ``mkit+http://`` is allowed only towards loopback (127.0.0.0/8, ::1,
``localhost``), so a bearer token never crosses a network in clear text; for the
same reason redirects are followed a few times only, never from https to http,
and the token goes only to the URL's own origin.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Final, NoReturn, Self
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from ..errors import (
    ConnectionFailed,
    InsecureScheme,
    InvalidArgument,
    InvalidRef,
    InvalidResponse,
    PackNotFound,
    PayloadTooLarge,
    RemoteError,
    TransportError,
)
from ..hashes import Hash, PackKey
from ..protocol.http import error_for
from ..refs import REF_VALUE_SIZE, RefWriteCondition, decode_ref_value, encode_ref_value
from ..retry import RetryPolicy
from ..transport import CHUNK_SIZE, PACK_BODY_LIMIT, PackInfo, Transport
from ..urls import (
    PROJECT_NAME_RE,
    is_loopback_host,
    pop_retry,
    pop_seconds,
    redact_url,
    reject_options,
    split_url,
)

__all__ = ["TOKEN_ENV", "HttpTransport"]

#: The environment variable a bearer token is taken from when no option gives one.
TOKEN_ENV: Final = "MKIT_API_TOKEN"  # noqa: S105 (a variable name, not a secret)
#: Options a URL's query may not set (they weaken TLS checking), with the safe way.
_URL_REFUSED: Final = {
    "verify": "pass verify= as a keyword argument (a CA bundle can also come from"
    " REQUESTS_CA_BUNDLE)"
}
MAX_REDIRECTS: Final = 3
#: The request header asking the server to check a stored copy before keeping it.
REPAIR_HEADER: Final = "Mkit-Repair"
#: Largest ref listing accepted, and largest error body read.
LISTING_LIMIT: Final = 64 << 20
_ERROR_BODY_LIMIT: Final = 64 << 10
_DEFAULT_TIMEOUT: Final = (10.0, 60.0)
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
#: ``Content-Range`` of a 206 to a closed range, and of a 416 naming the size.
_RANGE_ANSWER_RE: Final = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19}|\*)")
_UNSATISFIED_RE: Final = re.compile(r"bytes \*/(\d{1,19})")


# -- the one place failures are mapped ------------------------------------------------


class _BadStatus(Exception):
    """Internal: a response whose status is a failure; :func:`_mapped` translates it."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


#: The largest unwanted body read to keep a connection (see _release).
_DRAIN_LIMIT: Final = 64 * 1024


def _read_capped(response: requests.Response, limit: int) -> bytes:
    """Read a whole (small) body, refusing one over ``limit`` bytes."""
    data = bytearray()
    for chunk in response.iter_content(CHUNK_SIZE):
        data += chunk
        if len(data) > limit:
            response.close()
            raise PayloadTooLarge(f"response body over {limit} bytes", limit=limit)
    return bytes(data)


def _release(response: requests.Response) -> None:
    """Finish with a response whose body is not wanted, keeping its connection.

    Closing a response whose body was not read closes its connection (the socket
    still holds bytes), so the next request paid a new TCP (and TLS) handshake: a
    ref update cost three times a ref read. A short body (the server's empty or
    JSON answer) is read first, which hands the connection back to the pool; a long
    or unsized one is still closed.
    """
    declared = response.headers.get("Content-Length", "")
    bodiless = response.status_code in (204, 304) or response.request.method == "HEAD"
    if bodiless or (declared.isdigit() and int(declared) <= _DRAIN_LIMIT):
        with contextlib.suppress(requests.RequestException, OSError):
            response.content  # noqa: B018 (read to end, so the connection is reusable)
    response.close()


def _status_error(response: requests.Response) -> TransportError:
    """The taxonomy error for a failure status (the table in protocol/http.py)."""
    status = response.status_code
    try:
        body = json.loads(_read_capped(response, _ERROR_BODY_LIMIT))
    except (ValueError, RecursionError, PayloadTooLarge, requests.RequestException, OSError):
        body = {}  # the status alone still says what happened
    if not isinstance(body, dict):
        body = {}
    code = response.headers.get("Mkit-Error") or str(body.get("error", ""))
    message = f"HTTP {status} {code or response.reason}: {body.get('message', '')}".strip()
    if not response.headers.get("Mkit-Error"):
        message = f"{message.rstrip(':')} ({_foreign_origin(response)})"
    retry_after: float | None = None
    with contextlib.suppress(ValueError):
        retry_after = float(response.headers.get("Retry-After", ""))
    current: Hash | None = None
    if status in (409, 412) and body.get("current") is not None:
        try:
            current = Hash.from_hex(body["current"])
        except InvalidRef:
            return InvalidResponse(f"conflict names a malformed value: {body['current']!r}")
    return error_for(
        status,
        code,
        message,
        current=current,
        known="current" in body,
        retry_after=retry_after,
    )


def _foreign_origin(response: requests.Response) -> str:
    """Say who answered a failure the pack server did not (it always sends Mkit-Error).

    Behind a reverse proxy, a limit of the proxy's is otherwise reported as if the
    pack server had refused: nginx's 1 MiB default body limit made a big push fail
    with a bare "HTTP 413 Request Entity Too Large:".
    """
    server = response.headers.get("Server", "")[:80]
    who = f"a proxy or other server ({server})" if server else "a proxy or other server"
    said = f"answered by {who} in front of the pack server, not by it"
    if response.status_code == 413:
        said += (
            ": its request body limit is below this upload"
            " (nginx: client_max_body_size; README, 'Behind a reverse proxy')"
        )
    return said


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """Say whether ``kind`` is somewhere in the chain requests and urllib3 wrap."""
    pending: list[BaseException] = [error]
    for _ in range(16):
        if not pending:
            return False
        seen = pending.pop()
        if isinstance(seen, kind):
            return True
        pending.extend(a for a in getattr(seen, "args", ()) if isinstance(a, BaseException))
        for linked in (getattr(seen, "reason", None), seen.__cause__, seen.__context__):
            if isinstance(linked, BaseException):
                pending.append(linked)
    return False


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    """Map every failure under it onto the taxonomy, chained (the module's one place)."""
    try:
        yield
    except TransportError:
        raise
    except _BadStatus as bad:
        raise _status_error(bad.response) from None
    except requests.exceptions.InvalidURL as error:
        raise InvalidArgument(f"{what}: {error}") from error
    except requests.exceptions.SSLError as error:
        if _caused_by(error, ssl.SSLCertVerificationError):
            raise RemoteError(f"{what}: TLS certificate not trusted: {error}") from error
        raise ConnectionFailed(f"{what}: TLS failed: {error}") from error
    except (requests.exceptions.RequestException, OSError) as error:
        raise ConnectionFailed(f"{what}: {type(error).__name__}: {error}") from error


def _fail_response(message: str, response: requests.Response) -> NoReturn:
    response.close()
    raise InvalidResponse(message)


# -- the transport ----------------------------------------------------------------------


class _SizedBody:
    """A streamed request body with a known length, so requests sends Content-Length."""

    def __init__(self, chunks: Iterable[bytes], total: int) -> None:
        self.chunks = chunks
        self.total = total

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return self.total


@dataclass(frozen=True)
class _Environment:
    """The environment's settings for one origin (see HttpTransport._environment)."""

    proxies: dict[str, str]
    verify: bool | str
    auth: tuple[str, str] | None


class HttpTransport(Transport):
    """A client of an HTTP pack server (spec/SPEC-HTTP.md), pooled and thread-safe."""

    schemes: ClassVar[tuple[str, ...]] = ("mkit+http", "mkit+https")

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float | tuple[float, float] = _DEFAULT_TIMEOUT,
        verify: bool | str = True,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(retry=retry)
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"not an http(s) base URL: {redact_url(base_url)!r}")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise InsecureScheme(
                f"plain http to {parts.hostname} would expose data and tokens; use mkit+https"
            )
        self.base_url = base_url.rstrip("/") + "/"
        self._origin = (parts.scheme, parts.netloc)
        self._token = token or None
        self.timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self._session = requests.Session()
        # Passed with every request, not set on the session: requests lets a
        # REQUESTS_CA_BUNDLE in the environment override a session's verify, which
        # would silently ignore the CA a caller asked for.
        self._verify = verify
        # requests reads the environment (proxies, no_proxy, CA bundle, .netrc) on
        # every request: about 1.7 ms of CPU each, more than the loopback round trip
        # of a ref read. It is read once per origin instead (_environment), and the
        # session is told not to read it again.
        self._session.trust_env = False
        self._environments: dict[tuple[str, str], _Environment] = {}
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=16, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(
            {"User-Agent": "mkit-transport", "Accept-Encoding": "identity"}
        )

    @classmethod
    def from_url(cls, url: str, **options: object) -> Self:
        """Open ``mkit+https://host[:port]/project`` (``mkit+http`` to loopback only).

        Options: ``token`` (else the ``MKIT_API_TOKEN`` environment variable),
        ``timeout`` (seconds), ``verify`` (TLS: true, false or a CA bundle path),
        ``retries`` or ``retry``. A token in the URL itself is refused, and so is
        ``verify`` in the query (TLS checking is not a URL's to turn off).
        """
        parts = split_url(url, options, secrets=("token",), trusted=_URL_REFUSED)
        token = options.pop("token", None) or os.environ.get(TOKEN_ENV) or None
        seconds = pop_seconds(options, "timeout", _DEFAULT_TIMEOUT)
        verify = options.pop("verify", True)
        retry = pop_retry(options)
        reject_options(url, options)
        scheme = parts.scheme.removeprefix("mkit+")
        if parts.username is not None or parts.password is not None:
            raise InvalidArgument("credentials do not go in the URL; use the token option")
        try:
            port = parts.port
        except ValueError as error:
            raise InvalidArgument(f"{redact_url(url)!r}: bad port") from error
        segments = parts.path.strip("/").split("/")
        if not parts.hostname or not all(PROJECT_NAME_RE.fullmatch(s) for s in segments):
            raise InvalidArgument(f"{redact_url(url)!r}: expected mkit+https://host[:port]/project")
        if token is not None and not isinstance(token, str):
            raise InvalidArgument("option 'token' must be a string")
        if isinstance(verify, str) and verify.lower() in ("true", "false", "1", "0"):
            verify = verify.lower() in ("true", "1")
        if not isinstance(verify, bool | str):
            raise InvalidArgument("option 'verify' must be true, false or a CA bundle path")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = host if port is None else f"{host}:{port}"
        base = f"{scheme}://{netloc}/{'/'.join(segments)}"
        return cls(base, token=token, timeout=seconds, verify=verify, retry=retry)

    def __repr__(self) -> str:
        return f"HttpTransport({self.base_url!r}, token={'***' if self._token else None})"

    # -- one request ---------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | _SizedBody | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> requests.Response:
        """Send one request (following a few safe redirects); return a 2xx response.

        The body is streamed (``stream=True``): the caller reads it and closes it.
        A failure status raises the mapped error.
        """
        url = urljoin(self.base_url, path)
        what = f"{method} {url}"
        with _mapped(what):
            for _ in range(MAX_REDIRECTS + 1):
                sent = dict(headers or {})
                parts = urlsplit(url)
                if self._token and (parts.scheme, parts.netloc) == self._origin:
                    sent["Authorization"] = f"Bearer {self._token}"
                environment = self._environment(url, parts.scheme, parts.netloc)
                response = self._session.request(
                    method,
                    url,
                    headers=sent,
                    data=body,
                    stream=True,
                    timeout=self.timeout,
                    verify=environment.verify,
                    proxies=environment.proxies,
                    auth=None if "Authorization" in sent else environment.auth,
                    allow_redirects=False,
                )
                if response.status_code in ok:
                    return response
                if response.status_code not in _REDIRECTS:
                    raise _BadStatus(response)
                _release(response)
                url = self._redirect_target(url, response, body)
            raise RemoteError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def _environment(self, url: str, scheme: str, netloc: str) -> _Environment:
        """What the environment says for requests to ``url``'s origin, read once.

        The same settings requests itself would merge on each request (proxies and
        ``no_proxy``, ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` when ``verify`` is
        true, ``.netrc`` credentials), so turning ``trust_env`` off changes nothing
        a caller can see except the time.
        """
        key = (scheme, netloc)
        found = self._environments.get(key)
        if found is None:
            probe = requests.Session()  # trust_env on: the library's own merge rules
            merged = probe.merge_environment_settings(url, {}, None, self._verify, None)
            probe.close()
            netrc = requests.utils.get_netrc_auth(url)
            verify = merged["verify"]
            found = _Environment(
                dict(merged["proxies"]), self._verify if verify is None else verify, netrc
            )
            self._environments[key] = found
        return found

    def _redirect_target(
        self, url: str, response: requests.Response, body: bytes | _SizedBody | None
    ) -> str:
        target = urljoin(url, response.headers.get("Location", ""))
        parts = urlsplit(target)
        if isinstance(body, _SizedBody):
            raise RemoteError(f"redirected a streamed upload to {redact_url(target)}; not followed")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidResponse(f"redirect to an unusable location {target!r}")
        if parts.scheme == "http" and (
            urlsplit(url).scheme == "https" or not is_loopback_host(parts.hostname)
        ):
            raise InsecureScheme(
                f"refused a redirect from {redact_url(url)} to plain http {redact_url(target)}"
            )
        return target

    def _chunks(self, response: requests.Response, what: str) -> Iterator[bytes]:
        """Yield the response body in bounded chunks, closing it at the end.

        A body shorter than its ``Content-Length`` was cut on the way (a proxy that
        speaks HTTP/1.0 to its upstream turns a killed worker into a clean early end):
        that is ``ConnectionFailed``, which the core resumes with a range request,
        never a corrupt pack.
        """
        received = 0
        declared = response.headers.get("Content-Length", "")
        expected = int(declared) if declared.isdigit() and len(declared) < 20 else None
        with contextlib.closing(response), _mapped(what):
            for chunk in response.iter_content(CHUNK_SIZE):
                received += len(chunk)
                if received > PACK_BODY_LIMIT:
                    raise PayloadTooLarge("downloaded pack is over the limit")
                yield chunk
            if expected is not None and received < expected:
                raise ConnectionFailed(f"{what}: body cut at {received} of {expected} bytes")

    # -- packs ---------------------------------------------------------------------------

    def _put_pack(self, key: PackKey, data: bytes) -> None:
        _release(self._request("PUT", f"packs/{key.hex()}", body=data, ok=(200, 201, 204)))

    def _put_pack_stream(
        self, key: PackKey, chunks: Iterable[bytes], total: int, *, repair: bool = False
    ) -> None:
        # Repair: the server checks its stored copy where the bytes are and replaces
        # a damaged one (SPEC-HTTP, Mkit-Repair).
        headers = {REPAIR_HEADER: "1"} if repair else None
        body: bytes | _SizedBody = _SizedBody(chunks, total)
        if total == 0:  # an empty sized body would be sent chunked; send b"" instead
            body = b"".join(chunks)
        _release(
            self._request(
                "PUT", f"packs/{key.hex()}", headers=headers, body=body, ok=(200, 201, 204)
            )
        )

    def _repair_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        self._put_pack_stream(key, chunks, total, repair=True)

    def _get_pack(self, key: PackKey) -> bytes:
        return b"".join(self._open_pack_stream(key, 0))

    def _open_pack_stream(self, key: PackKey, offset: int) -> Iterator[bytes]:
        path = f"packs/{key.hex()}"
        if offset == 0:
            return self._chunks(self._request("GET", path), path)
        response = self._request("GET", path, headers={"Range": f"bytes={offset}-"}, ok=(206,))
        if response.headers.get("Mkit-Range-Start") != str(offset):
            _fail_response(f"asked for {path} from byte {offset}, got another range", response)
        return self._chunks(response, path)

    def _get_pack_range(self, key: PackKey, offset: int, length: int) -> bytes:
        # A closed range (SPEC-HTTP, ranged reads): 206 with a matching Content-Range,
        # or 416 with "bytes */SIZE" when it runs past the end. A server that answers
        # 416 without the size serves only "bytes=N-" (older than ranged reads): read
        # the range from that stream instead, taking exactly ``length`` bytes.
        path = f"packs/{key.hex()}"
        last = offset + length - 1
        response = self._request(
            "GET", path, headers={"Range": f"bytes={offset}-{last}"}, ok=(206, 416)
        )
        if response.status_code == 416:
            match = _UNSATISFIED_RE.fullmatch(response.headers.get("Content-Range", ""))
            _release(response)
            if match is None:
                return super()._get_pack_range(key, offset, length)
            raise self._range_past_end(key, offset, length, int(match.group(1)))
        answered = _RANGE_ANSWER_RE.fullmatch(response.headers.get("Content-Range", ""))
        if answered is None or (int(answered.group(1)), int(answered.group(2))) != (offset, last):
            _fail_response(f"asked for {path} bytes {offset}-{last}, got another range", response)
        taken = bytearray()
        for chunk in self._chunks(response, path):
            taken += chunk
            if len(taken) > length:
                _fail_response(f"{path}: the server sent more than {length} bytes", response)
        return bytes(taken)

    def _has_pack(self, key: PackKey) -> bool:
        try:
            _release(self._request("HEAD", f"packs/{key.hex()}"))
        except PackNotFound:
            return False
        return True

    def _list_packs(self, after: PackKey | None, limit: int) -> list[PackInfo]:
        query = f"packs?limit={limit}" + (f"&after={after.hex()}" if after is not None else "")
        response = self._request("GET", query)
        with _mapped("GET packs"), contextlib.closing(response):
            data = _read_capped(response, LISTING_LIMIT)
        try:
            rows = json.loads(data)["packs"]
            return [
                PackInfo(PackKey.from_hex(row["key"]), row["size"], row["mtime"]) for row in rows
            ]
        except (ValueError, RecursionError, KeyError, TypeError, InvalidRef) as error:
            raise InvalidResponse(f"malformed pack listing: {error}") from error

    def _delete_pack(self, key: PackKey) -> None:
        _release(self._request("DELETE", f"packs/{key.hex()}", ok=(200, 204)))

    # -- the store -----------------------------------------------------------------------

    def _init_store(self) -> bool:
        # POST /PROJECT/init: 201 when the server created the store, 200 when it was there.
        response = self._request("POST", "init", ok=(200, 201))
        _release(response)
        return response.status_code == 201

    # -- refs ----------------------------------------------------------------------------

    def _read_ref(self, name: str) -> Hash | None:
        path = quote(name)
        response = self._request("GET", path, ok=(200, 404))
        with _mapped(f"GET {path}"), contextlib.closing(response):
            if response.status_code == 404:
                if response.headers.get("Mkit-Error") == "ref_not_found":
                    return None
                raise _BadStatus(response)
            data = _read_capped(response, REF_VALUE_SIZE + 1)
        return decode_ref_value(data, remote=True, name=name)

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        headers = {"Content-Type": "text/plain; charset=us-ascii"}
        if condition.kind == "missing":
            headers["If-None-Match"] = "*"
        elif condition.kind == "match":
            assert condition.expected is not None
            headers["If-Match"] = f'"{condition.expected.hex()}"'
        # A RefConflict is raised without a name: update_ref gives it this one.
        _release(
            self._request(
                "PUT", quote(name), headers=headers, body=encode_ref_value(value), ok=(200, 204)
            )
        )

    def _delete_ref(self, name: str, condition: RefWriteCondition) -> None:
        headers = {}
        if condition.expected is not None:
            headers["If-Match"] = f'"{condition.expected.hex()}"'
        _release(self._request("DELETE", quote(name), headers=headers, ok=(200, 204)))

    def _list_refs(self, prefix: str) -> Iterable[tuple[str, Hash]]:
        response = self._request("GET", "refs?" + f"prefix={quote(prefix, safe='/')}")
        with _mapped("GET refs"), contextlib.closing(response):
            data = _read_capped(response, LISTING_LIMIT)
        try:
            rows = json.loads(data)["refs"]
            return [(str(row["name"]), Hash.from_hex(row["hash"])) for row in rows]
        except (ValueError, RecursionError, KeyError, TypeError, InvalidRef) as error:
            raise InvalidResponse(f"malformed ref listing: {error}") from error

    # -- lifetime --------------------------------------------------------------------------

    def _drop_connection(self, error: BaseException) -> None:
        if isinstance(error, ConnectionFailed):
            self._session.close()  # idle pooled connections may be dead; new ones follow

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()
