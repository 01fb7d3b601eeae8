"""The command line's side of optional dependencies (:mod:`mkit_transport._extras`).

A verb whose extra is not installed prints one line naming the extra and exits 2, the
status of a bad command line (the verb cannot run as asked), never a traceback.
"""

from __future__ import annotations

import sys

from .._extras import require
from ..errors import InvalidArgument
from .output import EXIT_CODES

__all__ = ["need"]


def need(verb: str, *modules: str) -> None:
    """Import ``modules`` for ``verb``, or print the install hint and exit with status 2."""
    try:
        require(verb, *modules)
    except InvalidArgument as missing:
        sys.stderr.write(f"mkit_transport: {missing}\n")
        raise SystemExit(EXIT_CODES["usage"]) from None
