"""The command line: ``python -m mkit_transport`` (also installed as ``mkit-transport``).

Readable output by default, ``--json`` for scripts, one line on stderr when
something fails (never a traceback) and a distinct exit code per error class.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Final, TextIO

from .. import errors
from ..hashes import Hash, PackKey
from ..refs import RefWriteCondition
from ..transport import Transport
from ..urls import open_transport
from . import probe, serve_http, serve_ssh
from . import sync as sync_cli
from .output import emit

__all__ = ["EXIT_CODES", "main"]

#: Exit status per outcome; documented in ``--help`` and the README.
EXIT_CODES: Final[dict[str, int]] = {
    "ok": 0,
    "failure": 1,  # anything unexpected
    "usage": 2,  # bad command line (argparse)
    "absent": 3,  # refs read: no such ref; packs exists: no such pack
    "PackNotFound": 10,
    "AccessDenied": 11,
    "RemoteError": 12,
    "RefConflict": 13,
    "InvalidRef": 14,
    "ConnectionFailed": 15,
    "ServerError": 16,
    "InvalidResponse": 17,
    "ProtocolError": 18,
    "PayloadTooLarge": 19,
    "InsecureScheme": 20,
}

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
#: sets ``opens_transport=False`` (then ``transport`` is None). None of them imports a
#: network library at import time.
_EXTENSIONS: Final = (sync_cli, serve_http, serve_ssh, probe)


def _refs_list(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    refs = transport.list_refs(args.prefix)
    rows = [{"name": ref.name, "hash": ref.hash.hex()} for ref in refs]
    emit(args, out, rows, "\n".join(f"{r['hash']}  {r['name']}" for r in rows))
    return 0


def _refs_read(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    value = transport.read_ref(args.name)
    if value is None:
        emit(args, out, {"name": args.name, "hash": None}, "")
        if not args.json:
            sys.stderr.write(f"mkit_transport: ref {args.name} is absent\n")
        return EXIT_CODES["absent"]
    emit(args, out, {"name": args.name, "hash": value.hex()}, value.hex())
    return 0


def _refs_write(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    value = Hash.from_hex(args.hash)
    if args.missing:
        condition = RefWriteCondition.MISSING
    elif args.expect is not None:
        condition = RefWriteCondition.match(Hash.from_hex(args.expect))
    else:
        condition = RefWriteCondition.ANY
    transport.update_ref(args.name, condition, value)
    emit(args, out, {"name": args.name, "hash": value.hex()}, f"{args.name} -> {value.hex()}")
    return 0


def _packs_exists(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    exists = transport.pack_exists(PackKey.from_hex(args.key))
    emit(args, out, {"key": args.key, "exists": exists}, "yes" if exists else "no")
    return 0 if exists else EXIT_CODES["absent"]


def _packs_upload(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    with open(args.file, "rb") as f:
        data = f.read()
    key = PackKey.of(data)
    transport.upload_pack(data, key)
    emit(args, out, {"key": key.hex(), "size": len(data)}, key.hex())
    return 0


def _conformance(args: argparse.Namespace, transport: Transport | None, out: TextIO) -> int:
    # Imported by name: the suite ships as mkit_transport.conformance (from conformance/).
    runner = importlib.import_module("mkit_transport.conformance.runner")
    code: int = runner.run_conformance(
        args.url, json_output=args.json, out=out, extra=args.pytest_args
    )
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mkit_transport",
        description="Inspect and update refs and packs on any mkit transport.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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

    refs = commands.add_parser("refs", help="list, read and write refs")
    refs_commands = refs.add_subparsers(dest="refs_command", required=True, metavar="VERB")
    sub = command(refs_commands, "list", _refs_list, "list refs under a prefix")
    sub.add_argument("url")
    sub.add_argument("--prefix", default="", help="e.g. refs/heads (component boundary)")
    sub = command(refs_commands, "read", _refs_read, "print a ref's value (exit 3 if absent)")
    sub.add_argument("url")
    sub.add_argument("name")
    sub = command(refs_commands, "write", _refs_write, "write a ref, optionally with CAS")
    sub.add_argument("url")
    sub.add_argument("name")
    sub.add_argument("hash", help="64 lowercase hex")
    condition = sub.add_mutually_exclusive_group()
    condition.add_argument("--expect", metavar="HASH", help="write only if the ref holds HASH")
    condition.add_argument("--missing", action="store_true", help="write only if absent")

    packs = commands.add_parser("packs", help="check and upload packs")
    packs_commands = packs.add_subparsers(dest="packs_command", required=True, metavar="VERB")
    sub = command(packs_commands, "exists", _packs_exists, "say whether a pack is stored")
    sub.add_argument("url")
    sub.add_argument("key", help="64 lowercase hex")
    sub = command(packs_commands, "upload", _packs_upload, "upload a file as a pack")
    sub.add_argument("url")
    sub.add_argument("file")
    sub = command(
        packs_commands, "verify", sync_cli.packs_verify, "download a pack and verify it fully"
    )
    sub.add_argument("url")
    sub.add_argument("key", help="64 lowercase hex")

    serve = commands.add_parser("serve", help="serve a store over HTTP or SSH")
    serve_commands = serve.add_subparsers(dest="serve_command", required=True, metavar="KIND")
    for module in _EXTENSIONS:
        module.add_cli(commands, serve_commands, command)

    sub = command(commands, "conformance", _conformance, "run the conformance suite on a URL")
    sub.add_argument("url")
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
    parser = _parser()
    args = parser.parse_args(argv)
    if extra and args.command != "conformance":
        parser.error("arguments after -- are only for the conformance command")
    args.pytest_args = extra
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
