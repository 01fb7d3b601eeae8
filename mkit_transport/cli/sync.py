"""Command-line verbs for snapshot sync: push, pull, mirror, log, show, packs verify.

Loaded by :mod:`mkit_transport.cli` through ``add_cli``. Reports print as one
readable line (or JSON with ``--json``); a progress bar goes to stderr only when
stderr is a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Final, TextIO

from ..refs import RefWriteCondition
from ..sync import (
    DEFAULT_CONCURRENCY,
    MirrorReport,
    Progress,
    PushReport,
    TransferOptions,
    log,
    mirror,
    open_snapshot,
    pull,
    push,
    show,
)
from ..sync.history import HISTORY_TRUNCATED
from ..sync.options import DEFAULT_LEVEL
from ..sync.plan import MAX_DEPTH, MAX_TOTAL_ENTRIES
from ..transport import Transport
from ..urls import open_transport
from .output import emit, mib

__all__ = ["add_cli", "quote_path"]

_Command = Callable[..., argparse.ArgumentParser]


class _Bar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = 0.0
        self.shown = False

    def __call__(self, event: Progress) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and event.phase != "done":
            return
        self.last = now
        total = f"/{event.objects_total}" if event.objects_total else ""
        line = (
            f"{event.phase:<8} objects {event.objects_done + event.objects_skipped}{total}"
            f"  in {event.bytes_in / 1048576:.1f} MiB  out {event.bytes_out / 1048576:.1f} MiB"
        )
        self.stream.write("\r" + line.ljust(72))
        self.shown = True
        if event.phase == "done":
            self.end()
        self.stream.flush()

    def end(self) -> None:
        """Finish the bar's line, so whatever follows (a report, an error) starts clean."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


@contextlib.contextmanager
def _progress(args: argparse.Namespace) -> Iterator[Callable[[Progress], None] | None]:
    """A progress bar for one command, when stderr is a terminal (and not ``--json``).

    Its line is ended on the way out, also when the command fails mid-way: the
    error message then starts on a line of its own instead of after the bar.
    """
    if args.json or not sys.stderr.isatty():
        yield None
        return
    bar = _Bar(sys.stderr)
    try:
        yield bar
    finally:
        bar.end()


def _expect(args: argparse.Namespace) -> RefWriteCondition | None:
    return RefWriteCondition.ANY if args.force else None


def _push(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    with _progress(args) as progress:
        report = push(
            args.dir,
            transport,
            args.ref,
            expect=_expect(args),
            dry_run=args.dry_run,
            progress=progress,
            repair=args.repair,
            stat_cache=not args.no_cache,
            options=TransferOptions(
                concurrency=args.concurrency, level=args.level, bwlimit=args.bwlimit
            ),
        )
    emit(args, out, report.to_json(), _sent(report, "send"))
    return 0


def _sent(report: PushReport | MirrorReport, action: str) -> str:
    """The one-line summary of a push ("send") or mirror ("copy")."""
    done = {"send": "sent", "copy": "copied"}[action]
    verb = f"would {action}" if report.dry_run else done
    new = report.new.hex() if report.new else "nothing"
    return (
        f"{report.ref} -> {new} ({'updated' if report.updated else 'unchanged'}): "
        f"{verb} {report.objects_sent} objects, skipped {report.objects_skipped}, "
        f"{report.packs_uploaded} packs, {mib(report.bytes_uploaded)} uploaded"
    )


def _byte_count(text: str) -> int:
    """A ``--cache-limit`` value: a whole number of bytes, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number of bytes: {text!r}")
    return int(text)


def _pull_usage_error(args: argparse.Namespace) -> str | None:
    if args.force and not args.update:
        return "--force needs --update"
    return None


def _pull(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    with _progress(args) as progress:
        report = pull(
            transport,
            args.ref,
            args.dir,
            replace=args.replace,
            update=args.update,
            force=args.force,
            cache_limit=args.cache_limit,
            progress=progress,
            options=TransferOptions(concurrency=args.concurrency, cache_dir=args.cache_dir),
            max_entries=args.max_entries,
            max_depth=args.max_depth,
        )
    text = (
        f"{report.dest}: {report.files} files from {report.value.hex()} "
        f"({report.packs_downloaded} packs downloaded, {report.packs_cached} cached, "
        f"{mib(report.bytes_downloaded)})"
    )
    emit(args, out, report.to_json(), text)
    return 0


def _mirror(args: argparse.Namespace, transport: Transport | None, out: TextIO) -> int:
    with (
        open_transport(args.src_url) as src,
        open_transport(args.dst_url) as dst,
        _progress(args) as progress,
    ):
        report = mirror(
            src,
            dst,
            args.ref,
            expect=_expect(args),
            dry_run=args.dry_run,
            progress=progress,
            options=TransferOptions(concurrency=args.concurrency, bwlimit=args.bwlimit),
        )
    emit(args, out, report.to_json(), _sent(report, "copy"))
    return 0


def _log(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    entries = log(transport, args.ref, limit=args.limit)
    lines = [
        f"{e.key.hex()}  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(e.created_ns / 1e9))}Z"
        f"  {e.packs} packs  {mib(e.pack_bytes)}"
        for e in entries
    ]
    rows = [e.to_json() for e in entries]
    if entries and entries[-1].parent_missing:  # the chain ends at an absent record
        lines.append(HISTORY_TRUNCATED)
        rows[-1]["history_truncated"] = HISTORY_TRUNCATED
    emit(args, out, rows, "\n".join(lines))
    return 0


_ESCAPES: Final = {"\a": "a", "\b": "b", "\t": "t", "\n": "n", "\v": "v", "\f": "f", "\r": "r"}


def quote_path(path: str) -> str:
    r"""Return ``path`` for a one-entry-per-line listing, quoted the way git quotes names.

    A name may hold any byte but ``/`` and NUL: a newline in it would split the
    listing, and bytes that are not UTF-8 (kept as lone surrogates by
    ``surrogateescape``) can not be printed as text. Such a name is printed in
    double quotes with C escapes (``\n``, ``\"``, ``\\``, octal ``\351`` for a raw
    byte); every other name, UTF-8 included, is printed as is.
    """
    if not any(_needs_quote(c) for c in path):
        return path
    parts = []
    for c in path:
        if c in _ESCAPES:
            parts.append("\\" + _ESCAPES[c])
        elif c in '"\\':
            parts.append("\\" + c)
        elif _needs_quote(c):
            raw = c.encode("utf-8", "surrogateescape")
            parts.append("".join(f"\\{b:03o}" for b in raw))
        else:
            parts.append(c)
    return '"' + "".join(parts) + '"'


def _needs_quote(c: str) -> bool:
    code = ord(c)
    return code < 0x20 or code == 0x7F or 0xDC80 <= code <= 0xDCFF or c in '"\\'


def _show(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    if args.cat:
        return _cat(args, transport, out)
    listing = show(
        transport,
        args.ref,
        args.path,
        options=TransferOptions(cache_dir=args.cache_dir),
        max_entries=args.max_entries,
        max_depth=args.max_depth,
    )
    rows = [
        {"path": e.path, "type": e.type, "mode": e.mode, "size": e.size, "id": e.oid}
        for e in listing.entries
    ]
    lines = [
        f"{e.type:<7} {e.mode:04o} {e.size:>12}  {quote_path(e.path)}" for e in listing.entries
    ]
    emit(args, out, rows, "\n".join(lines))
    return 0


def _cat(args: argparse.Namespace, transport: Transport, out: TextIO) -> int:
    """``show --cat``: the file's bytes, verified, to standard output (binary).

    Read by ranged reads (:func:`open_snapshot`), never whole packs; each piece is
    written once it is verified, so a damaged object ends the command with an error
    line (and its exit code) after the pieces before it.
    """
    snapshot = open_snapshot(transport, args.ref)
    sink = getattr(out, "buffer", None) or sys.stdout.buffer
    out.flush()
    with snapshot.open(args.path) as f:
        while piece := f.read(_CAT_PIECE):
            sink.write(piece)
    sink.flush()
    return 0


_CAT_PIECE: Final = 1 << 20


def _show_usage(args: argparse.Namespace) -> str | None:
    """``--cat`` needs a PATH and writes raw bytes (no ``--json``)."""
    if args.cat and not args.path:
        return "show --cat needs a PATH: the file to write to standard output"
    if args.cat and args.json:
        return "show --cat writes the file's bytes; it has no --json form"
    return None


def _level(text: str) -> int:
    """A zstd level from the command line: refused by argparse (one line), not later."""
    if not text.isdigit() or not 1 <= int(text) <= 19:
        raise argparse.ArgumentTypeError(f"a zstd level is a whole number from 1 to 19: {text!r}")
    return int(text)


def _positive(text: str) -> int:
    """A limit from the command line: a positive whole number (argparse says so in one line)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a limit is a positive whole number: {text!r}")
    return int(text)


def _common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="transfers in flight"
    )


def _limits(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--max-entries",
        type=_positive,
        default=None,
        help=f"most entries the snapshot may expand to (default {MAX_TOTAL_ENTRIES})",
    )
    sub.add_argument(
        "--max-depth",
        type=_positive,
        default=None,
        help=f"deepest directory nesting accepted (default {MAX_DEPTH})",
    )


def _add_push(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], command: _Command
) -> None:
    sub = command(commands, "push", _push, "push a directory as a snapshot, ref last")
    sub.add_argument("dir")
    sub.add_argument("url")
    sub.add_argument("ref")
    sub.add_argument("--dry-run", action="store_true", help="read only; report what would go")
    sub.add_argument("--force", action="store_true", help="overwrite the ref whatever it holds")
    sub.add_argument(
        "--repair",
        action="store_true",
        help="send everything; check packs already stored and replace damaged ones",
    )
    sub.add_argument(
        "--level",
        type=_level,
        default=DEFAULT_LEVEL,
        help=f"zstd level, 1-19 (default {DEFAULT_LEVEL})",
    )
    sub.add_argument("--bwlimit", type=float, default=None, help="upload bytes per second")
    sub.add_argument(
        "--no-cache",
        action="store_true",
        help="re-read and hash every file; the stat cache (which skips files whose size, "
        "mtime, ctime, inode and mode are unchanged, so, like git, misses a change that "
        "keeps all five) is neither read nor written",
    )
    _common(sub)


def _add_pull(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], command: _Command
) -> None:
    sub = command(commands, "pull", _pull, "restore a snapshot into a directory, atomically")
    sub.add_argument("url")
    sub.add_argument("ref")
    sub.add_argument("dir")
    sub.add_argument("--cache-dir", default=None, help="pack cache (default ~/.cache/...)")
    mode = sub.add_mutually_exclusive_group()
    mode.add_argument("--replace", action="store_true", help="replace an existing DIR whole")
    mode.add_argument(
        "--update",
        action="store_true",
        help="update a DIR an earlier pull wrote: write only what changed (refuses local edits)",
    )
    sub.add_argument(
        "--force",
        action="store_true",
        help="with --update: overwrite local edits, delete extras in the pull's way",
    )
    sub.add_argument(
        "--cache-limit",
        type=_byte_count,
        default=None,
        metavar="BYTES",
        help="pack cache size kept after the pull (default 10%% of the tree; 0 keeps none)",
    )
    sub.set_defaults(usage_error=_pull_usage_error)
    _limits(sub)
    _common(sub)


def add_cli(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    serve_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: _Command,
) -> None:
    """Add push, pull, mirror, log and show to the top-level command line."""
    del serve_commands  # sync adds no server
    _add_push(commands, command)
    _add_pull(commands, command)

    sub = command(commands, "mirror", _mirror, "copy a snapshot between two remotes")
    sub.add_argument("src_url")
    sub.add_argument("dst_url")
    sub.add_argument("ref")
    sub.add_argument("--dry-run", action="store_true", help="read only; report what would go")
    sub.add_argument("--force", action="store_true", help="overwrite the destination ref")
    sub.add_argument("--bwlimit", type=float, default=None, help="upload bytes per second")
    _common(sub)
    sub.set_defaults(opens_transport=False)

    sub = command(commands, "log", _log, "list a ref's snapshots, newest first")
    sub.add_argument("url")
    sub.add_argument("ref")
    sub.add_argument("--limit", type=int, default=None)

    sub = command(commands, "show", _show, "list the files of a ref's snapshot, or --cat one file")
    sub.add_argument("url")
    sub.add_argument("ref", help="a ref (refs/...) or, with --cat, a record hash from log")
    sub.add_argument("path", nargs="?", default=None)
    sub.add_argument("--cache-dir", default=None, help="pack cache (default ~/.cache/...)")
    sub.add_argument(
        "--cat",
        action="store_true",
        help="write PATH's bytes (verified) to stdout, fetching only its objects by range",
    )
    sub.set_defaults(usage_error=_show_usage)
    _limits(sub)
