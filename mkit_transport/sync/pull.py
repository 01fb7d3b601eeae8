"""``pull``: restore the snapshot a ref points at into a directory, atomically.

The invariant (spec/SPEC-SYNC.md): a pull writes into a directory beside the
destination and swaps it in only once every object has been verified; on any
failure the destination is unchanged. The pack cache and the swap live in
:mod:`.restore`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import InvalidArgument, RefNotFound
from ..transport import Transport
from .checkout import (
    Entry,
    Manifest,
    checkout_lock,
    forget,
    load_manifest,
    manifest_path,
    save_manifest,
)
from .common import fetch_record
from .fetch import ObjectFetcher
from .model import TYPE_CHUNKED, TYPE_FILE
from .options import TransferOptions, resolve
from .plan import Limits, plan_tree
from .progress import Meter, Progress
from .reports import PullReport
from .restore import (
    PackCache,
    PullPacks,
    check_dest,
    check_room,
    default_cache_dir,
    default_cache_limit,
    staged,
)
from .stream import open_tree_packs, stream_tree
from .update import LocalEdits, update_tree

__all__ = ["LocalEdits", "pull"]


def _check_limit(cache_limit: int | None) -> None:
    if cache_limit is None:
        return
    if isinstance(cache_limit, bool) or not isinstance(cache_limit, int) or cache_limit < 0:
        raise InvalidArgument(
            f"cache_limit must be a whole number of bytes >= 0, not {cache_limit!r}"
        )


def _has_entries(dest: str) -> bool:
    """Whether ``dest`` is a real directory holding something (an update's starting point)."""
    if not os.path.lexists(dest):
        return False
    if os.path.islink(dest) or not os.path.isdir(dest):
        raise FileExistsError(f"{dest} exists and is not a directory: nothing to update")
    return bool(os.listdir(dest))


def pull(
    transport: Transport,
    ref: str,
    dest_dir: str | os.PathLike[str],
    *,
    cache_dir: str | None = None,
    replace: bool = False,
    update: bool = False,
    force: bool = False,
    cache_limit: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    options: TransferOptions | None = None,
    concurrency: int | None = None,
    max_entries: int | None = None,
    max_depth: int | None = None,
) -> PullReport:
    """Restore the snapshot ``ref`` points at into ``dest_dir``, atomically.

    Downloads only packs missing from the cache (``cache_dir``, default
    :func:`default_cache_dir`), verifies every pack and object, writes the tree into
    a new directory beside ``dest_dir`` and swaps it in. A fresh pull writes file
    contents while their packs stream in (:mod:`.stream`): a pack is written to disk
    only if the cache will keep it. An existing ``dest_dir``
    that is not an empty directory is refused unless ``replace`` (then it is
    replaced whole) or ``update``. On any failure ``dest_dir`` is unchanged.

    ``update=True`` pulls incrementally into a directory an earlier pull wrote
    (:mod:`.update`): only changed entries are written, each by one rename, and
    only objects no local file holds are downloaded; local edits or extra files
    in its way (paths it writes or removes) are refused (:class:`LocalEdits`,
    nothing changed) unless ``force=True``; those elsewhere are left alone. An
    absent or empty ``dest_dir`` is pulled whole. ``replace`` and ``update`` are
    exclusive; ``force`` needs ``update``.

    The cache keeps at most ``cache_limit`` bytes of packs after the pull (least
    recently used evicted; default 10% of the files' bytes of the snapshot, 0 keeps
    none); packs are read from a directory of this pull's own meanwhile. A
    manifest of what was written is saved under the cache (``checkouts/``), never in
    the tree.

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
        FileExistsError: ``dest_dir`` is in the way and neither ``replace`` nor
            ``update``; :class:`LocalEdits` (a subclass) for local changes.
        InvalidArgument: ``options`` and a keyword knob were both given, a limit
            is not a positive whole number, or the modes conflict.
    """
    knobs = resolve("pull", options, concurrency=concurrency, cache_dir=cache_dir)
    limits = Limits.of(max_entries, max_depth)
    _check_limit(cache_limit)
    if replace and update:
        raise InvalidArgument("replace and update are exclusive: pick one")
    if force and not update:
        raise InvalidArgument("force applies to update only")
    meter = Meter(progress)
    dest = os.path.abspath(os.fspath(dest_dir))
    check_dest(dest, replace or update)
    meter.enter("plan")
    value = transport.read_ref(ref)
    if value is None:
        raise RefNotFound(f"ref {ref} is absent: nothing to pull", name=ref)
    record = fetch_record(transport, value, meter)
    root_dir = knobs.cache_dir or default_cache_dir()
    session = PullPacks(PackCache(root_dir))
    fetcher = ObjectFetcher(transport, record.packs, session, knobs.concurrency, meter)
    where = manifest_path(root_dir, dest)
    try:
        with checkout_lock(root_dir, dest):
            old = load_manifest(where, dest)
            entries: dict[str, Entry]
            if update and _has_entries(dest):
                files, entries = update_tree(
                    fetcher,
                    value.hex(),
                    record.root,
                    dest,
                    where,
                    old,
                    force=force,
                    limits=limits,
                    workers=knobs.concurrency,
                    meter=meter,
                )
                tree_bytes = sum(
                    e.size for e in entries.values() if e.type in (TYPE_FILE, TYPE_CHUNKED)
                )
            else:
                meter.enter("download", total=sum(p.objects for p in record.packs))
                open_tree_packs(fetcher)
                plan = plan_tree(fetcher.objects, record.root, limits)
                check_room(dest, plan)
                meter.enter("write")
                forget(where)  # the tree it describes is about to go
                entries = {}
                keep = default_cache_limit(plan.bytes) if cache_limit is None else cache_limit
                with staged(dest, replace) as stage:
                    files = stream_tree(
                        fetcher,
                        record.root,
                        stage,
                        plan=plan,
                        cache_limit=keep,
                        written=entries,
                    )
                save_manifest(
                    where, Manifest(os.path.realpath(dest), value.hex(), record.root, entries)
                )
                tree_bytes = plan.bytes
            fetcher.remember()
            fetcher.objects.close()
            session.finish(default_cache_limit(tree_bytes) if cache_limit is None else cache_limit)
    finally:
        fetcher.objects.close()
        session.close()
    meter.enter("done")
    return PullReport(
        ref=ref,
        value=value,
        dest=dest,
        files=files,
        packs_downloaded=fetcher.downloaded,
        packs_cached=len(fetcher.opened) - fetcher.downloaded,
        bytes_downloaded=meter.bytes_in,
        objects_by_range=fetcher.ranged_objects,
    )
