"""The target of an incremental pull: which paths a snapshot changes against a manifest.

Split from :mod:`.update` (which applies the changes). :func:`tree_diff` is git's
cache-tree: the snapshot's trees are compared with the manifest by id, so a subtree
whose id is unchanged at its path is skipped without reading anything, and the cost
follows the change, not the tree. :func:`whole_target` lists every path (the
fallback when there is no manifest to compare with).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, replace

from ..errors import PayloadTooLarge
from .checkout import Entry, Manifest
from .chunklist import MAX_CHUNK_LIST_SIZE, decode_chunk_list
from .fetch import ObjectFetcher
from .model import TYPE_CHUNKED, TYPE_DIR, _bad
from .plan import Limits

__all__ = ["Diff", "subtree", "tree_diff", "whole_target"]


class _Expansions:
    """Subtrees a manifest already knows: a tree id to its entries, re-rooted on demand."""

    def __init__(self, manifest: Manifest | None) -> None:
        self.trees: dict[bytes, tuple[dict[str, Entry], list[str], str]] = {}
        self.keys: list[str] = []
        if manifest is None:
            return
        # Only ``entries`` is a whole tree (``prev`` holds just the paths found clean).
        source = manifest.entries
        keys = self.keys = sorted(source)  # a saved manifest is sorted: linear
        self.trees[manifest.root] = (source, keys, "")
        for path, entry in source.items():
            if entry.type == TYPE_DIR:
                self.trees.setdefault(entry.oid, (source, keys, path + "/"))

    def expand(self, oid: bytes, prefix: str) -> list[tuple[str, Entry]] | None:
        known = self.trees.get(oid)
        if known is None:
            return None
        source, keys, base = known
        out: list[tuple[str, Entry]] = []
        for path in keys[bisect_left(keys, base) :]:
            if not path.startswith(base):
                break
            entry = source[path]
            moved = prefix != base
            out.append((prefix + path[len(base) :], replace(entry, st=None) if moved else entry))
        return out


def whole_target(
    fetcher: ObjectFetcher, root: bytes, old: Manifest | None, limits: Limits
) -> dict[str, Entry]:
    """Every path of snapshot ``root``, with only the trees that changed fetched.

    Subtrees the manifest knows (same tree id) are expanded from it; the rest are
    read level by level, one fetch per level.
    """
    known = _Expansions(old)
    target: dict[str, Entry] = {}
    level = [(root, "")]
    while level:
        objects = fetcher.get(oid for oid, _ in level if oid not in known.trees)
        following: list[tuple[bytes, str]] = []
        for oid, prefix in level:
            _too_deep(prefix, limits)
            expanded = known.expand(oid, prefix)
            if expanded is None:
                expanded = []
                for item in objects.tree(oid):
                    path = prefix + os.fsdecode(item.name)
                    entry = Entry(item.type, item.oid, item.size, item.mode, item.oid)
                    expanded.append((path, entry))
                    if item.type == TYPE_DIR:
                        following.append((item.oid, path + "/"))
            target.update(expanded)
            if len(target) > limits.entries:
                raise PayloadTooLarge(
                    f"the snapshot expands to more than {limits.entries} entries; raise "
                    "the limit with max_entries= (--max-entries)",
                    size=len(target),
                    limit=limits.entries,
                )
        level = following
    _resolve_chunks(fetcher, target)
    return target


def _resolve_chunks(fetcher: ObjectFetcher, target: dict[str, Entry]) -> None:
    """Fill in each new chunked file's chunks and content id from its chunk list."""
    lists = {e.oid for e in target.values() if e.type == TYPE_CHUNKED and not e.chunks}
    objects = fetcher.get(lists)
    for entry in target.values():
        if entry.type == TYPE_CHUNKED and not entry.chunks:
            _k, data = objects.read_bytes(entry.oid, MAX_CHUNK_LIST_SIZE)
            chunked = decode_chunk_list(data)
            if chunked.size != entry.size:
                raise _bad(
                    f"chunk list {entry.oid.hex()} has {chunked.size} bytes, not {entry.size}"
                )
            entry.cid, entry.chunks = chunked.id, tuple(chunked.chunks)


def _too_deep(prefix: str, limits: Limits) -> None:
    if prefix.count("/") > limits.depth:
        raise PayloadTooLarge(
            f"the snapshot nests directories deeper than {limits.depth}; "
            "raise the limit with max_depth= (--max-depth)",
            size=prefix.count("/"),
            limit=limits.depth,
        )


def _kids(keys: list[str], base: str) -> Iterator[str]:
    """The direct children of directory ``base`` (``""`` or ``"a/b/"``) among sorted ``keys``.

    A child directory's subtree is jumped over by bisection (``"0"`` sorts just
    after ``"/"``), so the cost follows the number of children, not of descendants.
    """
    i, n = bisect_left(keys, base), len(keys)
    while i < n:
        key = keys[i]
        if not key.startswith(base):
            return
        cut = key.find("/", len(base))
        if cut < 0:
            yield key
            i += 1
        else:
            i = bisect_left(keys, key[:cut] + "0", i)


def subtree(keys: list[str], path: str) -> list[str]:
    """Every path strictly under directory ``path`` among sorted ``keys``."""
    return keys[bisect_left(keys, path + "/") : bisect_left(keys, path + "0")]


@dataclass(slots=True)
class Diff:
    """What snapshot ``root`` changes against a manifest: new entries, and paths gone."""

    changed: dict[str, Entry]
    deleted: list[str]
    keys: list[str]  # the manifest's paths, sorted


def tree_diff(fetcher: ObjectFetcher, root: bytes, old: Manifest, limits: Limits) -> Diff:
    """The paths whose entries differ between ``old`` and snapshot ``root``, by tree ids.

    git's cache-tree: a subtree whose id the manifest holds at the same path is
    skipped without reading anything; only the trees that changed are fetched (one
    fetch per level), and a new subtree the manifest knows elsewhere is expanded
    from it. So the cost follows the change, not the tree.
    """
    known = _Expansions(old)
    entries, keys = old.entries, known.keys
    diff = Diff({}, [], keys)
    count = len(entries)

    def drop(path: str) -> None:
        nonlocal count
        gone = [path, *subtree(keys, path)] if entries[path].type == TYPE_DIR else [path]
        diff.deleted.extend(gone)
        count -= len(gone)

    level = [(root, "")] if root != old.root else []
    while level:
        objects = fetcher.get(oid for oid, _ in level)
        following: list[tuple[bytes, str]] = []
        for oid, prefix in level:
            _too_deep(prefix, limits)
            fresh: dict[str, Entry] = {}
            for item in objects.tree(oid):
                path = prefix + os.fsdecode(item.name)
                fresh[path] = Entry(item.type, item.oid, item.size, item.mode, item.oid)
            for path in _kids(keys, prefix):
                if path not in fresh:
                    drop(path)
            for path, entry in fresh.items():
                was = entries.get(path)
                if was is not None and (was.type, was.oid, was.mode) == (
                    entry.type,
                    entry.oid,
                    entry.mode,
                ):
                    continue  # the same entry, and for a directory the same subtree
                diff.changed[path] = entry
                if was is not None and was.type == TYPE_DIR == entry.type:
                    if was.oid != entry.oid:
                        following.append((entry.oid, path + "/"))
                    continue
                if was is not None and was.type == TYPE_DIR:
                    drop(path)
                    count += 1  # ``path`` itself stays, as another type
                elif was is None:
                    count += 1
                if entry.type == TYPE_DIR:
                    moved = known.expand(entry.oid, path + "/")
                    if moved is None:
                        following.append((entry.oid, path + "/"))
                    else:
                        diff.changed.update(moved)
                        count += len(moved)
            if count > limits.entries:
                raise PayloadTooLarge(
                    f"the snapshot expands to more than {limits.entries} entries; raise "
                    "the limit with max_entries= (--max-entries)",
                    size=count,
                    limit=limits.entries,
                )
        level = following
    _resolve_chunks(fetcher, diff.changed)
    return diff
