"""The command line, ``python -m mkit_transport`` (also installed as ``mkit-transport``).

:mod:`.main` builds the parser and maps errors to exit codes; each other module adds one
group of verbs (:mod:`.store` refs and packs, :mod:`.sync` push/pull/mirror/log/show,
:mod:`.serve_http`, :mod:`.serve_ssh`, :mod:`.probe`) and imports no network library or
optional dependency until its verb runs.
"""

from __future__ import annotations

from .main import EXIT_CODES, main

__all__ = ["EXIT_CODES", "main"]
