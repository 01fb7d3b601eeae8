"""Sizes every layer agrees on, in the lowest layer so that none imports a higher one.

The pack format caps a pack at the same size the transports accept; keeping the number
here (not on :class:`~mkit_transport.transport.Transport`) lets ``pack`` stay below
``transport`` in the layer order (``tests/test_layers.py``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["CHUNK_SIZE", "PACK_BODY_LIMIT"]

#: The largest pack any verb accepts or returns: 4 GiB.
PACK_BODY_LIMIT: Final = 4 << 30
#: The size of the chunks the provided streaming verbs hand out.
CHUNK_SIZE: Final = 1 << 20
