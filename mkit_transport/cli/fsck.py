"""``python -m mkit_transport fsck URL [--ref R ...] [--json] [--repair --from SRC]``.

Verifies every record, pack and index blob the refs reach
(:mod:`mkit_transport.sync.fsck`) and says which refs each damaged key breaks; with
``--repair --from SRC`` it puts the damaged keys back from another store (a URL or a
plain directory, read as a file store) and checks them again. Exit status: 0 clean
(or everything repaired), ``damaged`` when something is missing or corrupt,
``unrepaired`` when ``--repair`` could not fix it all (spec/SPEC-FSCK.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Final, TextIO

from ..errors import InvalidArgument
from ..sync.fsck import FsckReport, fsck, repair_from
from ..transport import Transport
from ..transports.file import FileTransport
from ..urls import open_transport, redact_url
from .output import EXIT_CODES, emit, mib

__all__ = ["add_cli"]

#: Repair rounds at most: a repaired record can list packs no round saw before.
_ROUNDS: Final = 3


@contextlib.contextmanager
def _source(where: str) -> Iterator[Transport]:
    """The store to repair from: a transport URL, or a directory holding a file store."""
    if "://" in where:
        with open_transport(where) as transport:
            yield transport
        return
    if not os.path.isdir(where):
        raise InvalidArgument(f"--from {where[:200]!r} is neither a URL nor a directory")
    with FileTransport(where) as transport:
        yield transport


def _lines(report: FsckReport) -> list[str]:
    lines = [
        f"{len(report.refs)} refs, {report.records} records, {report.packs_checked} packs "
        f"and {report.blobs_checked} index blobs checked ({mib(report.bytes_checked)})"
    ]
    for damage in (*report.missing, *report.corrupt):
        refs = ", ".join(damage.refs) or "no ref"
        lines.append(f"{damage.reason}: {damage.what} {damage.key} (breaks {refs})")
    return lines


def _fsck(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    if not args.repair:
        return _check(args, transport, None, out)
    # The source is opened first, so a bad --from is refused before any check.
    with _source(args.source) as source:
        return _check(args, transport, source, out)


def _check(
    args: argparse.Namespace, transport: Transport, source: Transport | None, out: TextIO
) -> int:
    refs = args.ref or None
    report = fsck(transport, refs=refs)
    data: dict[str, object] = {"url": redact_url(args.url), **report.as_dict()}
    lines = _lines(report)
    if report.ok:
        lines.append("ok")
        emit(args, out, data, "\n".join(lines))
        return 0
    if source is None:
        lines.append(f"{len(report.missing)} missing, {len(report.corrupt)} corrupt")
        emit(args, out, data, "\n".join(lines))
        return EXIT_CODES["damaged"]
    repairs: list[dict[str, object]] = []
    ok = False
    for _ in range(_ROUNDS):
        repaired = repair_from(transport, source, report)
        repairs.append(repaired.as_dict())
        lines += [f"repaired: {d.what} {d.key}" for d in repaired.repaired]
        lines += [f"unrepaired: {d.what} {d.key}: {d.reason}" for d in repaired.unrepaired]
        if not repaired.ok:
            break
        if not any(d.what == "record" for d in repaired.repaired):
            ok = True
            break
        # A record put back lists packs the last check could not see: check again.
        report = fsck(transport, refs=refs)
        if report.ok:
            ok = True
            break
        lines += _lines(report)
    data["repairs"] = repairs
    data["repaired"] = ok
    lines.append("all repaired" if ok else "some keys could not be repaired")
    emit(args, out, data, "\n".join(lines))
    return 0 if ok else EXIT_CODES["unrepaired"]


def add_cli(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    serve_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    """Add ``fsck URL`` to the command line."""
    del serve_commands
    sub = command(
        commands,
        "fsck",
        _fsck,
        "verify every record, pack and index blob the refs reach; optionally repair",
    )
    sub.add_argument("url")
    sub.add_argument(
        "--ref", action="append", metavar="R", help="check only ref R (repeatable; default all)"
    )
    sub.add_argument(
        "--repair", action="store_true", help="put damaged keys back from --from, then recheck"
    )
    sub.add_argument(
        "--from",
        dest="source",
        metavar="DIR_OR_URL",
        help="the store to repair from: a URL, or a directory holding a file store",
    )
    sub.set_defaults(usage_error=_usage_error)


def _usage_error(args: argparse.Namespace) -> str | None:
    """``--repair`` needs ``--from``, and ``--from`` is only for ``--repair``."""
    if args.repair and not args.source:
        return "fsck --repair needs --from DIR_OR_URL"
    if args.source and not args.repair:
        return "fsck --from is only used with --repair"
    return None
