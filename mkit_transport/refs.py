"""Refs: names, values, write conditions and the listing rules (spec/SPEC-REFS.md).

Everything here is pure and shared by every transport, so a ref means the same
thing on memory, file, HTTP, S3 and SSH.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

from .errors import InvalidArgument, InvalidRef, InvalidResponse, RefConflict
from .hashes import Hash

__all__ = [
    "MAX_REF_NAME",
    "MAX_SEGMENT",
    "REF_VALUE_SIZE",
    "Ref",
    "RefWriteCondition",
    "decode_ref_value",
    "encode_ref_value",
    "filter_listing",
    "normalize_prefix",
    "validate_ref_name",
]

#: Longest ref name in bytes. Tighter than upstream's 4096 so that every valid name
#: fits every store: an S3 key (1024 bytes with its prefix), a file path.
MAX_REF_NAME: Final = 512
#: Longest segment: one path component on a POSIX file system (NAME_MAX).
MAX_SEGMENT: Final = 255
#: A ref value on the wire and on disk: 64 lowercase hex and a line feed.
REF_VALUE_SIZE: Final = 65

_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
_VALUE_RE: Final = re.compile(rb"[0-9a-f]{64}\n")


def _name_problem(name: object, *, prefix: bool = False) -> str | None:
    """Say what is wrong with ``name`` as a ref name, or ``None`` when it is valid.

    As a ``prefix``, a last segment of ``HEAD`` is fine: ``refs/x/HEAD/y`` is a valid
    ref, so its parent must be listable.
    """
    if not isinstance(name, str):
        return f"must be a str, not {type(name).__name__}"
    if not name:
        return "is empty"
    if not name.isascii():
        return "has non-ASCII characters"
    if len(name) > MAX_REF_NAME:
        return f"is longer than {MAX_REF_NAME} bytes"
    segments = name.split("/")
    if segments[0] != "refs" or len(segments) < 2:
        return "must start with 'refs/'"
    for segment in segments:
        if not segment:
            return "has an empty segment (leading, trailing or double '/')"
        if not _SEGMENT_RE.fullmatch(segment):
            return f"segment {segment!r} has characters outside [A-Za-z0-9._-]"
        if segment.startswith("."):
            return f"segment {segment!r} starts with '.'"
        if segment.endswith(".lock"):
            return f"segment {segment!r} ends with '.lock'"
        if len(segment) > MAX_SEGMENT:
            return f"segment is longer than {MAX_SEGMENT} bytes"
    if segments[-1] == "HEAD" and not prefix:
        return "last segment is 'HEAD'"
    return None


def _shown(name: object) -> str:
    text = repr(name)
    return text if len(text) <= 100 else text[:97] + "..."


def validate_ref_name(name: str) -> str:
    """Return ``name`` if it is a valid ref name, else raise :class:`InvalidRef`.

    Names are checked, never repaired: no case folding, no slash trimming, so one
    ref has exactly one spelling on every transport.
    """
    problem = _name_problem(name)
    if problem is not None:
        raise InvalidRef(f"invalid ref name {_shown(name)}: {problem}")
    return name


def is_valid_ref_name(name: object) -> bool:
    """Say whether ``name`` is a valid ref name, without raising."""
    return _name_problem(name) is None


def normalize_prefix(prefix: str) -> str:
    """Validate a ``list_refs`` prefix and return it without trailing slashes.

    The empty prefix lists everything. Otherwise, once its trailing ``/`` are
    removed, the prefix is ``refs`` or follows the ref-name grammar (a last segment
    of ``HEAD`` included); ``p`` and ``p/`` therefore mean the same.
    """
    if not isinstance(prefix, str):
        raise InvalidRef(f"invalid prefix {_shown(prefix)}: must be a str")
    if prefix == "":
        return ""
    stripped = prefix.rstrip("/")
    if stripped == "refs":
        return stripped
    problem = _name_problem(stripped, prefix=True)
    if problem is not None:
        raise InvalidRef(f"invalid prefix {_shown(prefix)}: {problem}")
    return stripped


def filter_listing(prefix: str, names: Iterable[tuple[str, Hash]]) -> list[Ref]:
    """Apply the component-boundary listing rule to full ref names.

    ``prefix`` is already normalized. A ref named exactly the prefix is left out,
    ``refs/heads/feat`` matches ``refs/heads/feat/x`` (returned as ``x``) but never
    ``refs/heads/featx``; results are sorted by name without duplicates.
    """
    found: dict[str, Hash] = {}
    head = prefix + "/" if prefix else ""
    for full, value in names:
        if head and not full.startswith(head):
            continue
        rest = full[len(head) :]
        if rest:
            found[rest] = value
    return [Ref(name, found[name]) for name in sorted(found)]


def encode_ref_value(value: Hash) -> bytes:
    """Return the 65-byte wire and disk form of a ref value."""
    return value.hex().encode("ascii") + b"\n"


def decode_ref_value(data: bytes, *, remote: bool, name: str = "") -> Hash:
    """Parse exactly 64 lowercase hex and a line feed.

    Anything else is refused with :class:`InvalidResponse`: a value read back from a
    store, local file or remote alike, is a corrupt stored value, never the caller's
    bad input (``remote`` only words the message: received from a peer, or stored).
    """
    if not _VALUE_RE.fullmatch(data):
        shown = data[:80]
        where = f" of {name}" if name else ""
        kind = "ref value" if remote else "stored ref value"
        message = f"malformed {kind}{where}: {shown!r} (want 64 lowercase hex and LF)"
        raise InvalidResponse(message)
    return Hash(bytes.fromhex(data[:64].decode("ascii")))


@dataclass(frozen=True, slots=True)
class Ref:
    """A ref as listed: its name (relative to the listing prefix) and its value."""

    name: str
    hash: Hash


@dataclass(frozen=True, slots=True)
class RefWriteCondition:
    """When a ref write may happen: ``ANY``, ``MISSING`` or ``match(h)``.

    ``ANY`` always writes; ``MISSING`` writes only if the ref is absent;
    ``match(h)`` writes only if the ref currently holds ``h``. Every transport
    decides the condition atomically with the write.
    """

    kind: Literal["any", "missing", "match"]
    expected: Hash | None = None

    ANY: ClassVar[RefWriteCondition]
    MISSING: ClassVar[RefWriteCondition]

    def __post_init__(self) -> None:
        if self.kind not in ("any", "missing", "match"):
            raise InvalidArgument(f"unknown ref write condition {self.kind!r}")
        if (self.kind == "match") != isinstance(self.expected, Hash):
            raise InvalidArgument("only match(h) carries an expected Hash")

    @classmethod
    def match(cls, expected: Hash) -> RefWriteCondition:
        """Write only if the ref currently holds ``expected``."""
        if not isinstance(expected, Hash):
            raise InvalidArgument(f"match() takes a Hash, not {type(expected).__name__}")
        return cls("match", expected)

    def allows(self, current: Hash | None) -> bool:
        """Say whether a ref holding ``current`` (``None``: absent) may be written."""
        if self.kind == "any":
            return True
        if self.kind == "missing":
            return current is None
        return current == self.expected

    def require(self, name: str, current: Hash | None) -> None:
        """Raise :class:`RefConflict` (carrying ``current``) unless the write may happen.

        For stores that observe the ref's value under their own lock and decide the
        condition there: one place builds the conflict every transport reports.
        """
        if not self.allows(current):
            raise RefConflict(
                f"ref {name} does not satisfy {self!r}: it holds "
                f"{current.hex() if current is not None else 'nothing'}",
                name=name,
                current=current,
                known=True,
            )

    def __repr__(self) -> str:
        if self.kind == "match":
            assert self.expected is not None
            return f"RefWriteCondition.match({self.expected.hex()[:12]}...)"
        return f"RefWriteCondition.{self.kind.upper()}"


RefWriteCondition.ANY = RefWriteCondition("any")
RefWriteCondition.MISSING = RefWriteCondition("missing")
