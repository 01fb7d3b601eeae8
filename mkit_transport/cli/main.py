"""The command line: ``python -m mkit_transport`` (also installed as ``mkit-transport``).

Readable output by default, ``--json`` for scripts, one line on stderr when
something fails (never a traceback) and a distinct exit code per error class.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Final, TextIO

from .. import errors
from .._version import __version__
from ..transport import Transport
from ..urls import open_transport
from .needs import need
from .output import EXIT_CODES

__all__ = ["EXIT_CODES", "main"]


_EPILOG = (
    "exit status:\n"
    + "\n".join(f"  {code:>3}  {name}" for name, code in EXIT_CODES.items())
    + (
        "\n\nURLs: mkit+memory://NAME, mkit+file:///abs/path, mkit+http(s)://host/project,"
        "\n      mkit+s3://host/bucket[/prefix], mkit+ssh://user@host/path"
    )
)


#: Modules that add verbs: each has ``add_cli(commands, serve_commands, command)``, where
#: ``command(group, name, handler, help)`` makes a sub-command with ``--json``; a handler
#: is ``handler(args, transport, out) -> int`` and opens no transport when its parser
#: sets ``opens_transport=False`` (then ``transport`` is None). A parser may also set
#: ``usage_error(args) -> str | None``: a combination of options argparse cannot
#: express, refused as one line and exit 2 before any transport opens. None of them
#: imports a network library at import time.
_EXTENSIONS: Final = ("store", "sync", "gc", "fsck", "serve_http", "serve_ssh", "probe")


def _extensions(argv: Sequence[str]) -> list[ModuleType]:
    """The verb modules to load for ``argv``: every one, but ``serve ssh`` alone for itself.

    sshd starts ``serve ssh`` afresh for every channel, so its start-up is paid on
    each connection (a download of 256 MiB over loopback spent ~10% of its time
    there): the other verbs' modules (sync, gc, fsck, the HTTP server...) took most
    of that import time and serve ssh uses none of them. Its parser, help and
    errors are the same either way.
    """
    names = ("serve_ssh",) if list(argv[:2]) == ["serve", "ssh"] else _EXTENSIONS
    return [importlib.import_module(f"{__package__}.{name}") for name in names]


def _conformance(args: argparse.Namespace, transport: Transport | None, out: TextIO) -> int:
    need("conformance", "pytest", "hypothesis")  # the extra `conformance`
    # Imported by name: the suite ships as mkit_transport.conformance (from conformance/).
    runner = importlib.import_module("mkit_transport.conformance.runner")
    code: int = runner.run_conformance(
        args.url, json_output=args.json, out=out, extra=args.pytest_args, strict=args.strict
    )
    return code


def _parser(extensions: Sequence[ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mkit_transport",
        description="Inspect and update refs and packs on any mkit transport.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mkit_transport {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        handler: Callable[..., int],
        help_text: str,
    ) -> argparse.ArgumentParser:
        sub = group.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sub

    serve = commands.add_parser("serve", help="serve a store over HTTP or SSH")
    serve_commands = serve.add_subparsers(dest="serve_command", required=True, metavar="KIND")
    for module in extensions:
        module.add_cli(commands, serve_commands, command)

    sub = command(commands, "conformance", _conformance, "run the conformance suite on a URL")
    sub.add_argument("url")
    sub.add_argument(
        "--strict",
        action="store_true",
        help="fail when a test could not run (a guarantee not checked, e.g. no back door)",
    )
    sub.set_defaults(opens_transport=False)
    sub.epilog = "Arguments after -- go to pytest, e.g. -- --mkit-quick -k refs\n\n" + _EPILOG
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; return the exit status."""
    out = out or sys.stdout
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = _parser(_extensions(argv))
    args = parser.parse_args(argv)
    if extra and args.command != "conformance":
        parser.error("arguments after -- are only for the conformance command")
    args.pytest_args = extra
    usage_error = getattr(args, "usage_error", None)
    message = usage_error(args) if usage_error is not None else None
    if message:
        sys.stderr.write(f"mkit_transport: {message}\n")
        return EXIT_CODES["usage"]
    try:
        if not getattr(args, "opens_transport", True):
            return int(args.handler(args, None, out))
        with open_transport(args.url) as transport:
            return int(args.handler(args, transport, out))
    except errors.TransportError as error:
        name = type(error).__name__
        detail = str(error).splitlines()[0] if str(error) else name
        sys.stderr.write(f"mkit_transport: {name}: {detail}\n")
        return EXIT_CODES.get(name, EXIT_CODES["failure"])
    except OSError as error:
        sys.stderr.write(f"mkit_transport: {error}\n")
        return EXIT_CODES["failure"]
    except KeyboardInterrupt:
        sys.stderr.write("mkit_transport: interrupted\n")
        return 130
