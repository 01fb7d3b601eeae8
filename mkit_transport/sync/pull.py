"""``pull``: restore the snapshot a ref points at into a directory, atomically.

The invariant (spec/SPEC-SYNC.md): a pull writes into a directory beside the
destination and swaps it in only once every object has been verified; on any
failure the destination is unchanged. The pack cache and the swap live in
:mod:`.restore`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import RefNotFound
from ..transport import Transport
from .common import fetch_record, open_packs
from .materialise import materialise
from .options import TransferOptions, resolve
from .plan import Limits, plan_tree
from .progress import Meter, Progress
from .reports import PullReport
from .restore import check_dest, check_room, staged

__all__ = ["pull"]


def pull(
    transport: Transport,
    ref: str,
    dest_dir: str | os.PathLike[str],
    *,
    cache_dir: str | None = None,
    replace: bool = False,
    progress: Callable[[Progress], None] | None = None,
    options: TransferOptions | None = None,
    concurrency: int | None = None,
    max_entries: int | None = None,
    max_depth: int | None = None,
) -> PullReport:
    """Restore the snapshot ``ref`` points at into ``dest_dir``, atomically.

    Downloads only packs missing from the cache (``cache_dir``, default
    :func:`default_cache_dir`), verifies every pack and object, writes the tree into
    a new directory beside ``dest_dir`` and swaps it in. An existing ``dest_dir``
    that is not an empty directory is refused unless ``replace`` (then it is
    replaced whole). On any failure ``dest_dir`` is unchanged.

    ``options`` carries the transfer knobs (:class:`TransferOptions`; pull reads
    ``concurrency`` and ``cache_dir``); ``cache_dir`` and ``concurrency`` are also
    taken as keywords, but not with ``options``.

    Before anything is written, the tree DAG is planned (:func:`plan_tree`): its
    expansion may hold at most ``max_entries`` entries (default 10,000,000) nested at
    most ``max_depth`` deep (default 512), and the files' declared bytes must fit the
    free disk where ``dest_dir`` is. A refusal writes nothing, not even a staging
    directory. Staging directories killed pulls left beside ``dest_dir`` are swept
    (:func:`~.restore.sweep_stages`).

    Raises:
        RefNotFound: the ref is absent.
        PackNotFound: a pack it needs is missing (named).
        InvalidResponse: a pack, record, tree or object is corrupt (named).
        PayloadTooLarge: the snapshot is over ``max_entries`` or ``max_depth``, or
            declares more bytes than are free, or a path too long for the system.
        FileExistsError: ``dest_dir`` is in the way and ``replace`` is false.
        InvalidArgument: ``options`` and a keyword knob were both given, or a limit
            is not a positive whole number.
    """
    knobs = resolve("pull", options, concurrency=concurrency, cache_dir=cache_dir)
    limits = Limits.of(max_entries, max_depth)
    meter = Meter(progress)
    dest = os.path.abspath(os.fspath(dest_dir))
    check_dest(dest, replace)
    meter.enter("plan")
    value = transport.read_ref(ref)
    if value is None:
        raise RefNotFound(f"ref {ref} is absent: nothing to pull", name=ref)
    record = fetch_record(transport, value, meter)
    meter.enter("download", total=sum(p.objects for p in record.packs))
    objects, downloaded = open_packs(
        transport, record.packs, knobs.cache_dir, knobs.concurrency, meter
    )
    try:
        plan = plan_tree(objects, record.root, limits)
        check_room(dest, plan)
        meter.enter("write")
        with staged(dest, replace) as stage:
            files = materialise(objects, record.root, stage, workers=knobs.concurrency, plan=plan)
    finally:
        objects.close()
    meter.enter("done")
    return PullReport(
        ref=ref,
        value=value,
        dest=dest,
        files=files,
        packs_downloaded=downloaded,
        packs_cached=len(record.packs) - downloaded,
        bytes_downloaded=meter.bytes_in,
    )
