"""Snapshot sync (spec/SPEC-SYNC.md): push a directory, pull it back, mirror between remotes.

The layer above the transports: it speaks only the public
:class:`~mkit_transport.transport.Transport` verbs, so it runs unchanged over every
transport. Modules, from the verbs down:

* :mod:`.push`, :mod:`.pull`, :mod:`.mirror` and :mod:`.history` (``log``, ``show``):
  the verbs, one module each, on the shared helpers of :mod:`.common` (records, index
  blobs, the ref's CAS) and the knobs of :mod:`.options` (:class:`TransferOptions`);
* :mod:`.reader` (``open_snapshot``): one file of a remote snapshot on demand, by
  ranged reads of its packs (:mod:`.ranged`), each object verified by its id;
* :mod:`.packer`: the push pipeline (scan hand-off, pack building, parallel uploads);
* :mod:`.scan`: walking and hashing a directory into trees and blobs;
* :mod:`.model`: the snapshot formats (trees, records, index blobs) and materialising;
* :mod:`.restore`: pull's pack cache and atomic swap;
* :mod:`.reports` and :mod:`.progress`: what the verbs return and report as they go.
"""

from __future__ import annotations

from .history import log, show
from .mirror import mirror
from .options import DEFAULT_CONCURRENCY, DEFAULT_PACK_SIZE, TransferOptions
from .progress import Progress
from .pull import pull
from .push import push
from .reader import RemoteSnapshot, open_snapshot
from .reports import Listing, LogEntry, MirrorReport, PullReport, PushReport
from .restore import default_cache_dir

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_PACK_SIZE",
    "Listing",
    "LogEntry",
    "MirrorReport",
    "Progress",
    "PullReport",
    "PushReport",
    "RemoteSnapshot",
    "TransferOptions",
    "default_cache_dir",
    "log",
    "mirror",
    "open_snapshot",
    "pull",
    "push",
    "show",
]
