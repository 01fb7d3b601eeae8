"""``python -m mkit_transport gc URL [--grace D] [--keep-last N] [--dry-run] [--json]``.

Deletes the packs and blobs no ref reaches, once older than the grace period
(:mod:`mkit_transport.sync.gc`); ``--keep-last N`` also drops every ref's records
beyond its newest N and what only they held; ``--dry-run`` only says what would go.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Final, TextIO

from ..errors import InvalidArgument
from ..sync.gc import DEFAULT_GRACE, gc
from ..transport import Transport
from .output import emit, mib

__all__ = ["add_cli", "parse_duration"]

_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE: Final = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,6})?)([smhdw]?)")


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h``, ``1d`` or ``1w`` (InvalidArgument else)."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise InvalidArgument(f"bad duration {text[:40]!r}: use e.g. 3600, 90s, 15m, 2h, 1d, 1w")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _gc(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    grace = parse_duration(args.grace) if args.grace is not None else DEFAULT_GRACE
    report = gc(transport, grace=grace, dry_run=args.dry_run, keep_last=args.keep_last)
    verb = "would delete" if report.dry_run else "deleted"
    kept = "" if report.keep_last is None else f" (the last {report.keep_last} of each ref)"
    text = (
        f"{report.refs} refs, {report.records} records{kept}, "
        f"{report.reachable} keys reachable\n"
        f"{report.listed} packs and blobs stored ({mib(report.listed_bytes)})\n"
        f"{verb} {report.swept} unreachable ({mib(report.swept_bytes)}); kept "
        f"{report.kept_young} younger than the {report.grace:g} s grace period "
        f"({mib(report.kept_young_bytes)})"
    )
    emit(args, out, {"url": args.url, **report.as_dict()}, text)
    return 0


def add_cli(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    serve_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    """Add ``gc URL`` to the command line."""
    del serve_commands
    sub = command(
        commands,
        "gc",
        _gc,
        "delete packs and blobs no ref reaches, once older than the grace period",
    )
    sub.add_argument("url")
    sub.add_argument(
        "--grace",
        metavar="D",
        help="keep unreachable packs younger than D (e.g. 3600, 15m, 2h, 1d; default 1d)",
    )
    sub.add_argument(
        "--keep-last",
        metavar="N",
        type=int,
        default=None,
        help="keep only the newest N records of each ref's history (N >= 1)",
    )
    sub.add_argument("--dry-run", action="store_true", help="only report what would go")
    sub.set_defaults(usage_error=_usage_error)


def _usage_error(args: argparse.Namespace) -> str | None:
    """``--keep-last`` below 1, refused before the store is opened (exit 2)."""
    if args.keep_last is not None and args.keep_last < 1:
        return (
            f"--keep-last must be at least 1, got {args.keep_last}: "
            "keeping no record would sweep what the refs name"
        )
    return None
