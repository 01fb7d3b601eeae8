"""Test only: the real ``serve http`` process with a fault injector in front of its app.

The product ships no fault injection. For the retry tests (tests/test_http_faults.py)
this launcher runs the same command line, ``python -m tests.support.http_fault_server
FAULT_FILE serve http --root ...``: it wraps the app the product's ``build_app``
returns in :class:`FaultInjector`, then hands over to the product's CLI, so the
server is the real gunicorn process with the product's settings, plus the injector.
"""

from __future__ import annotations

import contextlib
import fcntl
import http
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

from mkit_transport.cli import main as cli_main
from mkit_transport.cli import serve_http

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_READ_SIZE = 1 << 16


class FaultInjector:
    """Fail the next requests with a chosen status (WSGI middleware).

    Reads ``path``, a JSON object ``{"status": 503, "count": 2, "after": false,
    "retry_after": null}``, under an exclusive lock on every request (so all
    workers share one budget): while ``count`` is positive, a request (other than
    the health check) is answered with ``status`` and error code ``injected_fault``
    (the server's JSON error shape), and ``count`` goes down by one. With ``"after":
    true`` the request is served first and its answer replaced, which is how a lost
    acknowledgement looks.
    """

    def __init__(self, app: WsgiApp, path: str) -> None:
        self.app = app
        self.path = path

    def _take(self) -> dict[str, Any] | None:
        with contextlib.suppress(FileNotFoundError), open(self.path, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            plan = json.loads(f.read() or "{}")
            if int(plan.get("count", 0)) <= 0:
                return None
            plan["count"] = int(plan["count"]) - 1
            f.seek(0)
            f.truncate()
            f.write(json.dumps(plan))
            return dict(plan)
        return None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Answer with the planned fault, or pass the request on."""
        if environ.get("PATH_INFO") == "/healthz":
            return self.app(environ, start_response)
        plan = self._take()
        if plan is None:
            return self.app(environ, start_response)
        if plan.get("after"):
            body = self.app(environ, lambda *args: None)
            for _ in body:
                pass
            if hasattr(body, "close"):
                body.close()
        else:  # drain the body, so the client reads the answer rather than a reset
            _drain(environ)
        status = int(plan.get("status", 503))
        payload = {"error": "injected_fault", "message": "fault injected for a test"}
        data = json.dumps(payload, sort_keys=True).encode() + b"\n"
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Mkit-Error", "injected_fault"),
        ]
        if plan.get("retry_after") is not None:
            headers.append(("Retry-After", str(plan["retry_after"])))
        start_response(f"{status} {http.HTTPStatus(status).phrase}", headers)
        return [data]


def _drain(environ: Environ) -> None:
    """Read and drop the request body (as far as its Content-Length says)."""
    text = environ.get("CONTENT_LENGTH") or ""
    remaining = int(text) if text.isdigit() else 0
    stream = environ["wsgi.input"]
    with contextlib.suppress(OSError, ValueError):
        while remaining > 0:
            chunk = stream.read(min(_READ_SIZE, remaining))
            if not chunk:
                return
            remaining -= len(chunk)


def main(argv: list[str]) -> int:
    """``FAULT_FILE serve http ...``: the product's command with the injector in front."""
    fault_file, command = argv[0], argv[1:]
    build_app = serve_http.build_app

    def faulty_app(args: Any) -> WsgiApp:
        return FaultInjector(build_app(args), fault_file)

    serve_http.build_app = faulty_app
    sys.stderr.write(f"tests: HTTP server with fault injection from {fault_file}\n")
    return cli_main(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
