"""Command-line verbs on a store, its refs and its packs.

``init``, ``refs list|read|write`` and ``packs exists|upload|verify``: the thin layer
over the :class:`~mkit_transport.transport.Transport` verbs, for inspecting a remote by hand or
from a script (``--json``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

from ..hashes import Hash, PackKey
from ..pack import PackVerifier
from ..refs import RefWriteCondition
from ..transport import Transport
from ..urls import redact_url
from .output import EXIT_CODES, emit, mib

__all__ = ["add_cli", "packs_verify"]

_Command = Callable[..., argparse.ArgumentParser]


def _init(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    created = transport.init_store()
    where = redact_url(args.url)  # a report is copied around: never a secret in it
    text = f"created an empty store at {where}" if created else f"a store is already at {where}"
    emit(args, out, {"url": where, "created": created}, text)
    return 0


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


def packs_verify(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    """Download the pack ``args.key`` and verify it fully; print what it holds.

    Exits 0 when the pack is intact; a damaged pack is InvalidResponse (exit 17),
    a missing one PackNotFound (exit 10), through the core CLI's error handling.
    """
    key = PackKey.from_hex(args.key)
    verifier = PackVerifier()
    for chunk in transport.download_pack_stream(key):
        verifier.feed(chunk)
    summary = verifier.finish()
    kinds = {1: "blob", 2: "tree"}
    data = {
        "key": summary.key.hex(),
        "size": summary.size,
        "entries": len(summary.entries),
        "raw_bytes": summary.raw_bytes,
        "stored_bytes": sum(e.stored_len for e in summary.entries),
        "kinds": {
            name: sum(1 for e in summary.entries if e.kind == kind) for kind, name in kinds.items()
        },
    }
    text = (
        f"{data['key']}: ok, {data['entries']} objects, {mib(summary.size)} "
        f"({mib(summary.raw_bytes)} raw)"
    )
    emit(args, out, data, text)
    return 0


def add_cli(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    serve_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: _Command,
) -> None:
    """Add ``init`` and the ``refs`` and ``packs`` groups to the top-level command line."""
    del serve_commands  # nothing to serve here

    sub = command(commands, "init", _init, "create an empty store (idempotent), like git init")
    sub.add_argument("url")

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
    sub = command(packs_commands, "verify", packs_verify, "download a pack and verify it fully")
    sub.add_argument("url")
    sub.add_argument("key", help="64 lowercase hex")
