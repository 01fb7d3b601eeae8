"""``python -m mkit_transport serve http``: the pack server under gunicorn.

gunicorn was the fastest WSGI server measured on this project's machines
(spec/SPEC-HTTP.md, "Server"): it de-chunks and streams request bodies instead of
spooling them, and its pre-fork workers share nothing, which the backend's atomic
ref conditions make safe. Each worker is threaded with deadlines
(:mod:`mkit_transport.server.worker`), so slow or stalled clients cannot hold the
server: a sync worker serves one connection at a time with no header deadline.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, TextIO

from ..errors import InvalidArgument
from ..server.http import PackServer, backend_factory, file_factory
from ..transport import PACK_BODY_LIMIT, Transport
from ..urls import redact_url
from .needs import need

__all__ = ["add_cli", "build_app", "serve"]

READ_TOKEN_ENV = "MKIT_READ_TOKEN"  # noqa: S105 (a variable name, not a secret)
WRITE_TOKEN_ENV = "MKIT_WRITE_TOKEN"  # noqa: S105
#: The access log line: client, time, method, path without query, protocol, status,
#: bytes, seconds, user agent. No %(u)s (Basic-auth user), %(r)s/%(q)s (query string),
#: %(f)s (a referrer's URL) nor any header that may carry a credential.
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(L)s "%(a)s"'


def build_app(args: argparse.Namespace) -> Callable[..., Any]:
    """Build the WSGI application the command line describes."""
    if (args.root is None) == (args.backend is None):
        raise InvalidArgument("serve http needs exactly one of --root DIR or --backend URL")
    factory = backend_factory(args.backend) if args.backend else file_factory(args.root)
    return PackServer(
        factory,
        read_token=args.read_token or os.environ.get(READ_TOKEN_ENV) or None,
        write_token=args.write_token or os.environ.get(WRITE_TOKEN_ENV) or None,
        max_pack_bytes=args.max_pack_bytes,
    )


def _bind(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def serve(args: argparse.Namespace, transport: Transport | None, out: TextIO) -> int:
    """Run gunicorn in the foreground until it is stopped (SIGTERM or SIGINT)."""
    need("serve http", "gunicorn")  # the extra `server`; a plain install lacks it
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    from ..server.worker import guarded_worker

    app = build_app(args)
    settings = {
        "bind": [args.bind],
        "workers": args.workers,
        "worker_class": guarded_worker(args.header_timeout, args.idle_timeout),
        "threads": args.threads,
        # Idle kept-alive connections wait in the worker's poller, not in a thread.
        "keepalive": args.keepalive,
        # The main loop heartbeats whatever the threads do: a long transfer is fine.
        "timeout": args.timeout,
        "graceful_timeout": 5,
        "accesslog": args.access_log,
        # gunicorn's default format records the Basic-auth user (a token sent as
        # TOKEN@host lands there) and the query string (%(r)s): log the path only.
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "mkit-http",
        "limit_request_line": 8190,
        "limit_request_fields": 64,
        # No control socket: it lives at one path per user, so two servers would clash.
        "control_socket_disable": True,
    }

    if args.certfile:
        # TLS in the server itself; a reverse proxy in front works as well.
        settings["certfile"] = args.certfile
        settings["keyfile"] = args.keyfile or args.certfile

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Callable[..., Any]:
            return app

    where = redact_url(args.backend) if args.backend else os.path.abspath(args.root)
    scheme = "https" if args.certfile else "http"
    out.write(f"mkit_transport: serving {where} at {scheme}://{args.bind}/NAME\n")
    out.flush()
    Server().run()
    return 0


def add_cli(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    serve_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    """Add ``serve http`` to the command line."""
    sub = command(serve_commands, "http", serve, "serve packs and refs over HTTP (gunicorn)")
    sub.set_defaults(opens_transport=False)
    sub.add_argument("--root", metavar="DIR", help="serve project NAME from DIR/NAME")
    sub.add_argument(
        "--backend", metavar="URL", help="serve project NAME from URL with /NAME appended"
    )
    sub.add_argument("--bind", type=_bind, default="127.0.0.1:8080", help="HOST:PORT")
    sub.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    sub.add_argument(
        "--threads", type=_positive, default=32, help="threads per worker (default 32)"
    )
    sub.add_argument(
        "--header-timeout",
        type=_positive,
        default=30,
        help="seconds a client has to send a request head (default 30)",
    )
    sub.add_argument(
        "--idle-timeout",
        type=_positive,
        default=120,
        help="seconds a body read or write may make no progress (default 120)",
    )
    sub.add_argument(
        "--keepalive",
        type=_positive,
        default=5,
        help="seconds an idle connection is kept open (default 5)",
    )
    sub.add_argument(
        "--timeout",
        type=_positive,
        default=600,
        help="seconds a worker may stop answering before it is restarted (default 600)",
    )
    sub.add_argument(
        "--max-pack-bytes", type=int, default=PACK_BODY_LIMIT, help="largest upload accepted"
    )
    sub.add_argument("--access-log", default="-", help="access log file ('-': stdout)")
    sub.add_argument("--certfile", help="serve TLS with this PEM certificate (chain)")
    sub.add_argument("--keyfile", help="the certificate's PEM private key")
    sub.add_argument(
        "--read-token", help=f"bearer token for reads (prefer the env {READ_TOKEN_ENV})"
    )
    sub.add_argument(
        "--write-token", help=f"bearer token for writes (prefer the env {WRITE_TOKEN_ENV})"
    )
