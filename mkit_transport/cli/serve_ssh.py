"""``python -m mkit_transport serve ssh``: the command sshd runs for each connection.

Two ways to run it (spec/SPEC-SSH.md, "Forced command"):

* ``serve ssh PATH`` serves the store at ``PATH``. Used as the remote command the
  client asks for, or pinned as a forced command in ``authorized_keys`` (then every
  client of that key gets that one store, whatever its URL says).
* ``serve ssh --root ROOT`` as a forced command serves the store the client asked
  for in ``SSH_ORIGINAL_COMMAND`` (``... serve ssh PATH``), which must lie inside
  ``ROOT`` (a relative ``PATH`` is taken relative to ``ROOT``).

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

from ..errors import AccessDenied, InvalidArgument, TransportError
from ..protocol.ssh import is_valid_remote_path
from ..server.ssh import Limits, serve

__all__ = ["add_cli", "resolve_store"]


def _inside(path: str, root: str) -> bool:
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def resolve_store(
    path: str | None, root: str | None, environ: dict[str, str] | os._Environ[str]
) -> tuple[str, TransportError | None]:
    """Decide which store to serve, and whether to refuse it (and why).

    Returns ``(path, refusal)``; a refusal is sent in answer to the client's hello.
    """
    if root is not None:
        words = shlex.split(environ.get("SSH_ORIGINAL_COMMAND", ""))
        if len(words) < 3 or words[-3:-1] != ["serve", "ssh"]:
            return root, AccessDenied("this key only runs '... serve ssh PATH' (forced command)")
        path = os.path.join(root, words[-1])
        if not is_valid_remote_path(words[-1]) or not _inside(path, root):
            return root, AccessDenied(f"{words[-1]!r} is not a store inside the served root")
    assert path is not None
    pinned = environ.get("MKIT_SERVE_ROOT")
    if pinned and not _inside(path, pinned):
        return path, AccessDenied(f"{path} is outside MKIT_SERVE_ROOT")
    return os.path.abspath(path), None


def _hang_up(signum: int, frame: FrameType | None) -> None:
    # sshd hangs up a cut connection: unwind, so a half-received pack's temporary
    # file is removed by the file transport's cleanup rather than left behind.
    raise SystemExit(128 + signum)


def _serve_ssh(args: argparse.Namespace, transport: object, out: TextIO) -> int:
    if (args.path is None) == (args.root is None):
        raise InvalidArgument("give either PATH or --root ROOT")
    path, refusal = resolve_store(args.path, args.root, os.environ)
    for signum in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, _hang_up)
    limits = Limits(
        max_upload=args.max_upload,
        idle_timeout=args.idle_timeout,
        frame_timeout=args.frame_timeout,
    )
    return serve(path, sys.stdin.buffer, sys.stdout.buffer, limits=limits, refusal=refusal)


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
    sub.add_argument("path", nargs="?", help="the store directory (must exist)")
    sub.add_argument(
        "--root",
        help="forced-command mode: serve the PATH of SSH_ORIGINAL_COMMAND, inside ROOT",
    )
    sub.add_argument("--max-upload", type=int, default=defaults.max_upload, metavar="BYTES")
    sub.add_argument("--idle-timeout", type=float, default=defaults.idle_timeout, metavar="S")
    sub.add_argument("--frame-timeout", type=float, default=defaults.frame_timeout, metavar="S")
    sub.set_defaults(opens_transport=False)
