"""mkit_transport: content-addressed packs and compare-and-swap refs, over any remote.

Quick start::

    from mkit_transport import Hash, PackKey, RefWriteCondition, open_transport

    with open_transport("mkit+file:///srv/store") as remote:
        pack = b"...pack bytes..."
        remote.upload_pack(pack, PackKey.of(pack))
        remote.update_ref("refs/heads/main", RefWriteCondition.MISSING, Hash.of(b"commit"))

Snapshot sync on top: ``push(directory, transport, "refs/heads/main")``, ``pull``,
``mirror``, ``log`` and ``show``, and ``open_snapshot`` to read one file of a remote
snapshot by ranged reads (spec/SPEC-SYNC.md).

``import mkit_transport`` imports no network library: HTTP (requests), S3 (boto3)
and SSH (paramiko) load when a URL of their scheme is first opened.
"""

from typing import TYPE_CHECKING

from ._version import __version__
from .errors import (
    AccessDenied,
    ConnectionFailed,
    InsecureScheme,
    InvalidArgument,
    InvalidRef,
    InvalidResponse,
    PackNotFound,
    PayloadTooLarge,
    ProtocolError,
    RefConflict,
    RefNotFound,
    RemoteError,
    ServerError,
    TransportError,
)
from .hashes import Hash, PackKey
from .refs import Ref, RefWriteCondition
from .retry import ConflictBackoff, RetryPolicy, is_retryable
from .transport import PACK_BODY_LIMIT, PackInfo, Transport
from .transports import FileTransport, MemoryTransport
from .urls import open_transport, register_transport

if TYPE_CHECKING:
    from .sync import (
        MirrorReport,
        PullReport,
        PushReport,
        RemoteSnapshot,
        TransferOptions,
        log,
        mirror,
        open_snapshot,
        pull,
        push,
        show,
    )

#: Names of :mod:`.sync`, imported on first use (PEP 562): the remote side of an SSH
#: connection (``python -m mkit_transport serve ssh``) is a new process per channel
#: and never syncs; importing sync cost it ~75 ms of CPU at each start, ~1/3 of the
#: process's start-up and the largest part of the SSH download's gap to ``cat``.
_SYNC_NAMES = frozenset(
    {
        "MirrorReport",
        "PullReport",
        "PushReport",
        "RemoteSnapshot",
        "TransferOptions",
        "log",
        "mirror",
        "open_snapshot",
        "pull",
        "push",
        "show",
    }
)


def __getattr__(name: str) -> object:
    if name in _SYNC_NAMES:
        from . import sync

        value = getattr(sync, name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SYNC_NAMES)


__all__ = [
    "PACK_BODY_LIMIT",
    "AccessDenied",
    "ConflictBackoff",
    "ConnectionFailed",
    "FileTransport",
    "Hash",
    "InsecureScheme",
    "InvalidArgument",
    "InvalidRef",
    "InvalidResponse",
    "MemoryTransport",
    "MirrorReport",
    "PackInfo",
    "PackKey",
    "PackNotFound",
    "PayloadTooLarge",
    "ProtocolError",
    "PullReport",
    "PushReport",
    "Ref",
    "RefConflict",
    "RefNotFound",
    "RefWriteCondition",
    "RemoteError",
    "RemoteSnapshot",
    "RetryPolicy",
    "ServerError",
    "TransferOptions",
    "Transport",
    "TransportError",
    "__version__",
    "is_retryable",
    "log",
    "mirror",
    "open_snapshot",
    "open_transport",
    "pull",
    "push",
    "register_transport",
    "show",
]
