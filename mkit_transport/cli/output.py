"""Output shared by every command-line verb: readable text, or JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
from typing import Final, TextIO

__all__ = ["EXIT_CODES", "emit", "mib"]

#: Exit status per outcome; documented in ``--help`` and the README.
EXIT_CODES: Final[dict[str, int]] = {
    "ok": 0,
    "failure": 1,  # anything unexpected
    "usage": 2,  # bad command line (argparse)
    "absent": 3,  # refs read: no such ref; packs exists: no such pack
    "damaged": 4,  # fsck: a key some ref reaches is missing or corrupt
    "unrepaired": 5,  # fsck --repair: some damaged key could not be put back
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
    "InvalidArgument": 21,
    "RefNotFound": 22,
}


def emit(args: argparse.Namespace, out: TextIO, data: object, text: str) -> None:
    """Print ``data`` as one JSON document under ``--json``, else ``text`` (if any)."""
    if args.json:
        json.dump(data, out, sort_keys=True)
        out.write("\n")
    elif text:
        out.write(text + "\n")


def mib(n: int) -> str:
    """A byte count as every verb prints it: MiB with two decimals, or bytes below 1 MiB."""
    return f"{n / 1048576:.2f} MiB" if n >= 1048576 else f"{n} B"
