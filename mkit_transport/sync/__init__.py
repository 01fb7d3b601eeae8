"""Snapshot sync (spec/SPEC-SYNC.md): push a directory, pull it back, mirror between remotes.

The layer above the transports: it speaks only the public
:class:`~mkit_transport.transport.Transport` verbs, so it runs unchanged over every
transport. Modules, from the verbs down:

* :mod:`.verbs`: ``push``, ``pull``, ``mirror``, ``log`` and ``show``;
* :mod:`.packer`: the push pipeline (scan hand-off, pack building, parallel uploads);
* :mod:`.scan`: walking and hashing a directory into trees and blobs;
* :mod:`.model`: the snapshot formats (trees, records, index blobs) and materialising;
* :mod:`.restore`: pull's pack cache and atomic swap;
* :mod:`.reports` and :mod:`.progress`: what the verbs return and report as they go.
"""

from __future__ import annotations

from .progress import Progress
from .reports import Listing, LogEntry, MirrorReport, PullReport, PushReport
from .restore import default_cache_dir
from .verbs import DEFAULT_CONCURRENCY, DEFAULT_PACK_SIZE, log, mirror, pull, push, show

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_PACK_SIZE",
    "Listing",
    "LogEntry",
    "MirrorReport",
    "Progress",
    "PullReport",
    "PushReport",
    "default_cache_dir",
    "log",
    "mirror",
    "pull",
    "push",
    "show",
]
