"""``python -m mkit_transport gc URL [options]``: gc, history retention and repack.

``[--grace D] [--keep-last N] [--max-unused PCT | --repack] [--dry-run] [--json]``.
Deletes the packs and blobs no ref reaches, once older than the grace period
(:mod:`mkit_transport.sync.gc`); ``--keep-last N`` also drops every ref's records
beyond its newest N and what only they held; ``--max-unused PCT`` (or ``--repack``,
5%) rewrites mostly unused packs (:mod:`mkit_transport.sync.repack`); ``--dry-run``
only says what would go.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Final, TextIO

from ..errors import InvalidArgument
from ..sync.gc import DEFAULT_GRACE, gc
from ..sync.repack import DEFAULT_MAX_UNUSED
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


#: A dry run's text names at most this many keys it would delete (``--json``: all).
_NAMED = 20


def _gc(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    grace = parse_duration(args.grace) if args.grace is not None else DEFAULT_GRACE
    max_unused = DEFAULT_MAX_UNUSED if args.repack else args.max_unused
    report = gc(
        transport,
        grace=grace,
        dry_run=args.dry_run,
        keep_last=args.keep_last,
        max_unused=max_unused,
    )
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
    if report.dry_run and report.swept_keys:
        names = report.swept_keys[:_NAMED]
        text += "".join(f"\n  would delete {key}" for key in names)
        if report.swept > len(names):
            text += f"\n  ... and {report.swept - len(names)} more (--json lists every one)"
    if report.repack is not None:
        done = report.repack
        verb = "would rewrite" if report.dry_run else "rewrote"
        into = "" if report.dry_run else f" into {done.packs_written} ({mib(done.bytes_written)})"
        text += (
            f"\nrepack: kept packs hold {mib(done.live_bytes)} live, "
            f"{mib(done.unused_bytes)} unused; {verb} {done.packs_rewritten} packs "
            f"({mib(done.bytes_rewritten)}){into}; {done.refs_moved} refs moved"
            + (
                f", {done.refs_conflicted} left as a concurrent push moved them"
                if done.refs_conflicted
                else ""
            )
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
    sub.add_argument(
        "--max-unused",
        metavar="PCT",
        type=float,
        default=None,
        help="repack: rewrite the packs the kept records list, worst first, until at "
        "most PCT percent of their bytes are unused (0-100)",
    )
    sub.add_argument(
        "--repack",
        action="store_true",
        help=f"repack with --max-unused {DEFAULT_MAX_UNUSED:g}",
    )
    sub.add_argument("--dry-run", action="store_true", help="only report what would go")
    sub.set_defaults(usage_error=_usage_error)


def _usage_error(args: argparse.Namespace) -> str | None:
    """``--keep-last`` below 1, a bad ``--max-unused``: refused before the store is opened."""
    if args.max_unused is not None and not 0 <= args.max_unused <= 100:
        return f"--max-unused must be a percentage between 0 and 100, got {args.max_unused:g}"
    if args.repack and args.max_unused is not None:
        return f"--repack is --max-unused {DEFAULT_MAX_UNUSED:g}: give one of them"
    if args.keep_last is not None and args.keep_last < 1:
        return (
            f"--keep-last must be at least 1, got {args.keep_last}: "
            "keeping no record would sweep what the refs name"
        )
    return None
