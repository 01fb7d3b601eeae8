"""``python -m mkit_transport serve ssh``: the command sshd runs for each connection.

Three ways to run it (spec/SPEC-SSH.md, "Server"):

* ``serve ssh PATH`` serves the store at ``PATH``. Used as the remote command the
  client asks for, or pinned as a forced command in ``authorized_keys`` (then every
  client of that key gets that one store, whatever its URL says).
* ``serve ssh --root ROOT`` as a forced command serves the store the client asked
  for in ``SSH_ORIGINAL_COMMAND`` (``... serve ssh PATH``), which must lie inside
  ``ROOT`` (a relative ``PATH`` is taken relative to ``ROOT``).
* ``serve ssh --backend URL [PATH]`` serves the store at ``URL`` with the segments
  of ``PATH`` appended (as ``serve http --backend`` appends the project), on any
  transport; without ``PATH`` (a forced command) the path comes from
  ``SSH_ORIGINAL_COMMAND``. Appended segments cannot climb out of ``URL``.

With ``MKIT_SERVE_ROOT`` set, the store must lie inside it as well. A refused path
is answered with ``AccessDenied`` after the client's hello, not a dead pipe.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO
from urllib.parse import urlsplit

from ..errors import AccessDenied, InvalidArgument, RemoteError, TransportError
from ..protocol.ssh import is_valid_remote_path
from ..server.ssh import Limits, serve
from ..transport import Transport
from ..urls import open_transport

__all__ = ["add_cli", "resolve_backend_store", "resolve_store"]


def _inside(path: str, root: str) -> bool:
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _requested_path(environ: dict[str, str] | os._Environ[str]) -> str | None:
    """The PATH of a forced command's ``SSH_ORIGINAL_COMMAND`` (``... serve ssh PATH``).

    The command is the client's to choose: one that does not parse (an unclosed
    quote) names no path, so the caller refuses it in answer to the hello.
    """
    try:
        words = shlex.split(environ.get("SSH_ORIGINAL_COMMAND", ""))
    except ValueError:
        return None
    if len(words) < 3 or words[-3:-1] != ["serve", "ssh"]:
        return None
    return words[-1]


_FORCED_ONLY = "this key only runs '... serve ssh PATH' (forced command)"


def resolve_store(
    path: str | None, root: str | None, environ: dict[str, str] | os._Environ[str]
) -> tuple[str, TransportError | None]:
    """Decide which store to serve, and whether to refuse it (and why).

    Returns ``(path, refusal)``; a refusal is sent in answer to the client's hello.
    """
    if root is not None:
        requested = _requested_path(environ)
        if requested is None:
            return root, AccessDenied(_FORCED_ONLY)
        path = os.path.join(root, requested)
        if not is_valid_remote_path(requested) or not _inside(path, root):
            return root, AccessDenied(f"{requested!r} is not a store inside the served root")
        if not os.path.isdir(root):
            # init creates a store inside the root, never the root itself.
            return root, RemoteError(f"the served root {root} is missing")
    assert path is not None
    pinned = environ.get("MKIT_SERVE_ROOT")
    if pinned and not _inside(path, pinned):
        return path, AccessDenied(f"{path} is outside MKIT_SERVE_ROOT")
    return os.path.abspath(path), None


def resolve_backend_store(
    url: str, path: str | None, environ: dict[str, str] | os._Environ[str]
) -> tuple[str, TransportError | None]:
    """The URL to serve under ``--backend URL``: ``URL`` with ``PATH``'s segments appended.

    ``PATH`` comes from the command line, else from ``SSH_ORIGINAL_COMMAND``. Its
    leading ``/`` is dropped (``/team/repo`` and ``team/repo`` name the same
    store) and its segments are checked (no ``..``), so it stays under ``URL``.
    Returns ``(url, refusal)`` like :func:`resolve_store`.
    """
    requested = path if path is not None else _requested_path(environ)
    if requested is None:
        return url, AccessDenied(_FORCED_ONLY)
    if not is_valid_remote_path(requested):
        return url, AccessDenied(f"{requested!r} is not a store path")
    parts = urlsplit(url)
    tail = requested.lstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/{tail}{query}", None


def _hang_up(signum: int, frame: FrameType | None) -> None:
    # sshd hangs up a cut connection: unwind, so a half-received pack's temporary
    # file is removed by the file transport's cleanup rather than left behind.
    raise SystemExit(128 + signum)


def _serve_ssh(args: argparse.Namespace, transport: object, out: TextIO) -> int:
    if args.backend is not None and args.root is not None:
        raise InvalidArgument("give --root ROOT or --backend URL, not both")
    if args.backend is None and (args.path is None) == (args.root is None):
        raise InvalidArgument("give either PATH or --root ROOT")
    for signum in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, _hang_up)
    limits = Limits(
        max_upload=args.max_upload,
        idle_timeout=args.idle_timeout,
        frame_timeout=args.frame_timeout,
    )
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    if args.backend is None:
        path, refusal = resolve_store(args.path, args.root, os.environ)
        return serve(path, stdin, stdout, limits=limits, refusal=refusal)
    url, refusal = resolve_backend_store(args.backend, args.path, os.environ)
    # A bad URL fails here, on stderr, before any hello (the client reports the
    # command's exit status and that line).
    backend: Transport = open_transport(args.backend if refusal else url)
    with backend:
        return serve(backend, stdin, stdout, limits=limits, refusal=refusal)


def add_cli(
    commands: Any,
    serve_commands: Any,
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    """Add ``serve ssh`` to the command line."""
    defaults = Limits()
    sub = command(
        serve_commands,
        "ssh",
        _serve_ssh,
        "serve a store over stdin/stdout (the remote side of mkit+ssh://)",
    )
    sub.add_argument(
        "path", nargs="?", help="the store directory (init creates it), or a path under --backend"
    )
    sub.add_argument(
        "--root",
        help="forced-command mode: serve the PATH of SSH_ORIGINAL_COMMAND, inside ROOT",
    )
    sub.add_argument(
        "--backend",
        metavar="URL",
        help="serve the store at URL with PATH (or SSH_ORIGINAL_COMMAND's PATH) appended",
    )
    sub.add_argument("--max-upload", type=int, default=defaults.max_upload, metavar="BYTES")
    sub.add_argument("--idle-timeout", type=float, default=defaults.idle_timeout, metavar="S")
    sub.add_argument("--frame-timeout", type=float, default=defaults.frame_timeout, metavar="S")
    sub.set_defaults(opens_transport=False)
