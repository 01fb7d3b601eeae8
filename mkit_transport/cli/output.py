"""Output shared by every command-line verb: readable text, or JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

__all__ = ["emit"]


def emit(args: argparse.Namespace, out: TextIO, data: object, text: str) -> None:
    """Print ``data`` as one JSON document under ``--json``, else ``text`` (if any)."""
    if args.json:
        json.dump(data, out, sort_keys=True)
        out.write("\n")
    elif text:
        out.write(text + "\n")
