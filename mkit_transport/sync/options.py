"""The transfer knobs of the sync verbs, in one value: :class:`TransferOptions`.

A caller (the command line, a service) builds it once and hands the same value to
``push``, ``pull``, ``mirror`` and ``show``; each verb reads the knobs that apply to
it. The verbs still take the knobs as keyword arguments (the older spelling), so
:func:`resolve` turns either spelling into one value and refuses a mix of both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..errors import InvalidArgument

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_LEVEL",
    "DEFAULT_PACK_SIZE",
    "TransferOptions",
    "resolve",
]

#: Target size of one pack (a pack is sealed before it would grow past it).
DEFAULT_PACK_SIZE: Final = 64 << 20
#: Uploads and downloads in flight at once.
DEFAULT_CONCURRENCY: Final = 4
#: The zstd level packs are built with.
DEFAULT_LEVEL: Final = 3


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """How a sync verb moves bytes; never what it moves or where the ref goes.

    Which verb reads which knob:

    * ``concurrency``: uploads and downloads in flight at once (every verb);
    * ``level``, ``pack_size``, ``spool_dir``: how ``push`` builds packs (the zstd
      level, the target pack size, the directory packs are built in, default the
      system temp directory);
    * ``bwlimit``: bytes per second ``push`` and ``mirror`` send (``None``: no cap);
    * ``cache_dir``: the pack cache of ``pull`` and ``show`` (default
      :func:`~mkit_transport.sync.default_cache_dir`).

    A knob a verb does not read is ignored by it, so one value serves all four.
    """

    concurrency: int = DEFAULT_CONCURRENCY
    level: int = DEFAULT_LEVEL
    pack_size: int = DEFAULT_PACK_SIZE
    bwlimit: float | None = None
    spool_dir: str | None = None
    cache_dir: str | None = None


def resolve(
    verb: str,
    options: TransferOptions | None,
    *,
    concurrency: int | None = None,
    level: int | None = None,
    pack_size: int | None = None,
    bwlimit: float | None = None,
    spool_dir: str | None = None,
    cache_dir: str | None = None,
) -> TransferOptions:
    """The options ``verb`` runs with: ``options``, or one built from the keyword knobs.

    A keyword left at ``None`` was not given. Giving ``options`` and a keyword knob
    both is refused (which should win is a guess), before any I/O.

    Raises:
        InvalidArgument: ``options`` and a keyword knob were both given.
    """
    knobs = {
        "concurrency": concurrency,
        "level": level,
        "pack_size": pack_size,
        "bwlimit": bwlimit,
        "spool_dir": spool_dir,
        "cache_dir": cache_dir,
    }
    given = sorted(name for name, value in knobs.items() if value is not None)
    if options is not None:
        if given:
            raise InvalidArgument(
                f"{verb}: give the transfer knobs either as options= or as keywords, "
                f"not both (got options and {', '.join(given)})"
            )
        return options
    return TransferOptions(
        concurrency=DEFAULT_CONCURRENCY if concurrency is None else concurrency,
        level=DEFAULT_LEVEL if level is None else level,
        pack_size=DEFAULT_PACK_SIZE if pack_size is None else pack_size,
        bwlimit=bwlimit,
        spool_dir=spool_dir,
        cache_dir=cache_dir,
    )
