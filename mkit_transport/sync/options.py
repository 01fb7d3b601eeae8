"""The transfer knobs' defaults shared by push, pull, mirror and show."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_CONCURRENCY", "DEFAULT_PACK_SIZE"]

#: Target size of one pack (a pack is sealed before it would grow past it).
DEFAULT_PACK_SIZE: Final = 64 << 20
#: Uploads and downloads in flight at once.
DEFAULT_CONCURRENCY: Final = 4
