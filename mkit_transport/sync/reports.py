"""The typed reports of snapshot sync (spec/SPEC-SYNC.md): what push, pull, mirror did.

They are plain frozen values, kept apart from the verbs that build them, so a caller
(or the CLI's ``--json``) can keep, compare or serialise them without importing the
sync machinery.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..hashes import Hash, PackKey
from .materialise import FileEntry

__all__ = ["Listing", "LogEntry", "MirrorReport", "PullReport", "PushReport"]


def _hex(value: Hash | PackKey | None) -> str | None:
    return value.hex() if value is not None else None


class _Report:
    def to_json(self) -> dict[str, object]:
        """Return the report as JSON-ready data (hashes as hex)."""
        data = asdict(self)  # type: ignore[call-overload]
        return {k: (_hex(v) if isinstance(v, Hash | PackKey) else v) for k, v in data.items()}


@dataclass(frozen=True, slots=True)
class PushReport(_Report):
    """What a push did (or, with ``dry_run``, would do)."""

    ref: str
    old: Hash | None
    new: Hash | None
    dry_run: bool
    updated: bool
    objects_sent: int
    objects_skipped: int
    raw_bytes_sent: int
    packs_uploaded: int
    packs_skipped: int
    bytes_uploaded: int
    bytes_downloaded: int
    files: int


@dataclass(frozen=True, slots=True)
class PullReport(_Report):
    """What a pull did."""

    ref: str
    value: Hash
    dest: str
    files: int
    packs_downloaded: int
    packs_cached: int
    bytes_downloaded: int
    #: Objects read alone by ranged reads (a small part of a pack not at hand).
    objects_by_range: int = 0


@dataclass(frozen=True, slots=True)
class MirrorReport(_Report):
    """What a mirror did (or, with ``dry_run``, would do)."""

    ref: str
    old: Hash | None
    new: Hash
    dry_run: bool
    updated: bool
    objects_sent: int
    objects_skipped: int
    packs_uploaded: int
    packs_skipped: int
    bytes_uploaded: int


@dataclass(frozen=True, slots=True)
class LogEntry(_Report):
    """One snapshot of a ref's history, newest first."""

    key: PackKey
    root: str
    parent: PackKey | None
    created_ns: int
    packs: int
    pack_bytes: int
    parent_missing: bool = False


@dataclass(frozen=True, slots=True)
class Listing:
    """The files of one snapshot (``show``)."""

    ref: str
    key: PackKey
    root: str
    entries: tuple[FileEntry, ...] = field(default=())
