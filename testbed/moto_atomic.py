"""``moto_server`` with its conditional writes made atomic, as AWS S3's are.

moto (5.2) checks ``If-Match`` / ``If-None-Match`` and then writes, with no lock
between the two (``moto/s3/responses.py``: ``put_object``, ``delete_object``, and
the multipart completion in ``_key_response_post``), and its server is threaded.
Under real concurrency two conditional PUTs on one ETag can then both pass: a lost
update made by the emulator, not by the client (seen as 797 of 800 increments in the
8-process counter race under load, while SeaweedFS, which locks, always ends exact).
AWS documents conditional writes as atomic, so the test server serialises exactly
these handlers and stays threaded for everything else (a streamed download never
blocks another request).

Usage: ``python -m testbed.moto_atomic [moto_server arguments]``.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

from moto.s3.responses import S3Response
from moto.server import main

_CONDITIONAL = ("put_object", "delete_object", "_key_response_post")
_LOCK = threading.Lock()


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def run(self: S3Response, *args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(self, *args, **kwargs)

    return run


def patch() -> list[str]:
    """Serialise the conditional-write handlers; return the ones found."""
    found = []
    for name in _CONDITIONAL:
        method = getattr(S3Response, name, None)
        if method is not None:
            setattr(S3Response, name, _serialised(method))
            found.append(name)
    return found


if __name__ == "__main__":
    if "put_object" not in patch():
        sys.exit("testbed.moto_atomic: moto has no S3Response.put_object to serialise")
    main(sys.argv[1:])
