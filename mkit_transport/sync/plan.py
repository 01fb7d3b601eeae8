"""Planning a pull before it writes: the tree DAG counted, iteratively, within limits.

A snapshot of a few kilobytes can name one subtree many times; :func:`plan_tree`
walks the DAG once without recursion and counts what its expansion would write
(entries, depth, declared bytes, longest path), so a pull or ``show`` refuses an
amplified or oversized snapshot before touching the disk (spec/SPEC-SYNC.md,
SPEC-THREATS THREAT-11).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..errors import InvalidArgument, PayloadTooLarge
from .model import (
    TYPE_CHUNKED,
    TYPE_DIR,
    TYPE_FILE,
    _bad,
)
from .objects import PackObjects

__all__ = ["MAX_DEPTH", "MAX_TOTAL_ENTRIES", "Limits", "TreePlan", "plan_tree"]


#: Deepest directory nesting and most entries (counted over the expansion of the tree
#: DAG) that ``pull`` and ``show`` accept by default; callers raise them (:class:`Limits`).
MAX_DEPTH: Final = 512
MAX_TOTAL_ENTRIES: Final = 10_000_000


@dataclass(frozen=True, slots=True)
class Limits:
    """How far ``pull`` and ``show`` follow a snapshot's tree DAG (issue 15).

    A tree may name the same subtree many times (legal: the store is a DAG), so a
    few kilobytes of trees can expand to 2**41 entries; these caps are counted over
    the expansion, before anything is written or listed. Callers raise them with
    the ``max_entries`` / ``max_depth`` keywords (``--max-entries``, ``--max-depth``).
    """

    entries: int = MAX_TOTAL_ENTRIES
    depth: int = MAX_DEPTH

    def __post_init__(self) -> None:
        for name, value in (("max_entries", self.entries), ("max_depth", self.depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"{name} must be a positive whole number, not {value!r}")

    @classmethod
    def of(cls, max_entries: int | None, max_depth: int | None) -> Limits:
        """The limits a verb's keywords ask for (``None``: the default)."""
        return cls(
            MAX_TOTAL_ENTRIES if max_entries is None else max_entries,
            MAX_DEPTH if max_depth is None else max_depth,
        )


@dataclass(slots=True)
class TreePlan:
    """What a tree expands to: entries, files, declared file bytes, nesting, longest path.

    ``depth`` is the nesting below the tree (0: no subdirectory); ``longest`` is the
    longest relative path under it, in bytes. Counted over the expansion: a subtree
    named twice counts twice, as a pull writes it twice.
    """

    entries: int = 0
    files: int = 0
    bytes: int = 0
    depth: int = 0
    longest: int = 0

    def absorb(self, name_length: int, child: TreePlan) -> None:
        """Add subdirectory ``child`` (named with ``name_length`` bytes) to this tree's sum."""
        self.entries += child.entries
        self.files += child.files
        self.bytes += child.bytes
        self.depth = max(self.depth, child.depth + 1)
        self.longest = max(self.longest, name_length + 1 + child.longest)


@dataclass(slots=True)
class _Frame:
    oid: bytes
    own: int  # entries of this tree itself
    dirs: list[tuple[bytes, int]]  # subdirectories: tree id and name length, in order
    plan: TreePlan
    next: int = 0


def _over_entries(limits: Limits, count: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the snapshot expands to more than {limits.entries} entries (a tree may name the "
        "same subtree many times); raise the limit with max_entries= (--max-entries)",
        size=count,
        limit=limits.entries,
    )


def plan_tree(objects: PackObjects, root: bytes, limits: Limits | None = None) -> TreePlan:
    """Count what tree ``root`` expands to, refusing beyond ``limits``; write nothing.

    An iterative depth-first walk over the DAG (no recursion, so any nesting is a
    clear error, never a RecursionError) that reads each distinct tree once and sums
    each subtree once (memoised by id), so 40 trees naming their child twice cost 40
    reads, not 2**40. Refuses (``PayloadTooLarge``, naming the keyword that raises the
    limit) as soon as any subtree, or the trees on the current path, exceed
    ``limits.entries``, or nesting exceeds ``limits.depth``; a tree that contains
    itself is ``InvalidResponse``. Memory: one summary per distinct tree, and the
    subdirectory ids of the trees on the current path (bounded by the entry limit).
    """
    limits = limits or Limits()
    done: dict[bytes, TreePlan] = {}
    frames: list[_Frame] = []
    on_path: set[bytes] = set()
    stacked = 0  # entries of the trees on the current path

    def enter(oid: bytes) -> None:
        nonlocal stacked
        if oid in on_path:
            raise _bad(f"tree {oid.hex()} contains itself")
        if len(frames) > limits.depth:
            raise PayloadTooLarge(
                f"the snapshot nests directories deeper than {limits.depth}; "
                "raise the limit with max_depth= (--max-depth)",
                size=len(frames),
                limit=limits.depth,
            )
        entries = objects.tree(oid)
        plan = TreePlan(entries=len(entries))
        dirs: list[tuple[bytes, int]] = []
        for entry in entries:
            if entry.type == TYPE_DIR:
                dirs.append((entry.oid, len(entry.name)))
                continue
            plan.longest = max(plan.longest, len(entry.name))
            if entry.type in (TYPE_FILE, TYPE_CHUNKED):
                plan.files += 1
                plan.bytes += entry.size
        stacked += len(entries)
        if stacked > limits.entries:
            raise _over_entries(limits, stacked)
        frames.append(_Frame(oid, len(entries), dirs, plan))
        on_path.add(oid)

    enter(root)
    while True:
        frame = frames[-1]
        if frame.next < len(frame.dirs):
            oid, name_length = frame.dirs[frame.next]
            child = done.get(oid)
            if child is None:
                enter(oid)
                continue
            frame.plan.absorb(name_length, child)
            frame.next += 1
            if frame.plan.entries > limits.entries:
                raise _over_entries(limits, frame.plan.entries)
            continue
        frames.pop()
        on_path.discard(frame.oid)
        stacked -= frame.own
        done[frame.oid] = frame.plan
        if not frames:
            return frame.plan
