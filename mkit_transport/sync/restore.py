"""Pull's local side: the cache of verified packs and the atomic swap into place.

Both exist so that a pull never leaves a half-state behind: the cache holds only
whole packs that passed the verifier (a download lands under a temporary name and
is renamed in), and a restored tree is built beside its destination and swapped in
with renames, the old tree moved aside first and deleted last.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from ..errors import InvalidResponse, PackNotFound, PayloadTooLarge, TransportError
from ..hashes import PackKey
from ..pack import PackFile, PackVerifier
from ..transport import Transport
from .model import PackRef
from .progress import Meter

__all__ = [
    "PackCache",
    "check_dest",
    "default_cache_dir",
    "relabel",
    "staged",
    "swap_in",
    "verified_chunks",
]


def default_cache_dir() -> str:
    """The pack cache used when none is given: ``$XDG_CACHE_HOME/mkit_transport``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mkit_transport")


def relabel(error: TransportError, what: str) -> TransportError:
    """The same error class, with ``what`` (a pack's name) in front of its message."""
    if isinstance(error, PayloadTooLarge):
        return PayloadTooLarge(f"{what}: {error}", size=error.size, limit=error.limit)
    return type(error)(f"{what}: {error}")


class PackCache:
    """Verified packs kept on disk by key: ``<dir>/packs/<hex>`` (only whole, verified packs)."""

    def __init__(self, directory: str) -> None:
        self.dir = os.path.join(directory, "packs")
        os.makedirs(self.dir, exist_ok=True)

    def path(self, key: PackKey) -> str:
        """Where pack ``key`` lives once whole and verified (named by its key alone)."""
        return os.path.join(self.dir, key.hex())

    def fetch(self, transport: Transport, key: PackKey, meter: Meter) -> None:
        """Download ``key``, verifying it as it streams, and move it into the cache.

        The transport checks the key; the verifier checks the structure and the
        trailer. Objects are not decompressed here: each is verified against its id
        when it is read for writing (SYNC-13), so the bytes are inflated once.
        """
        fd, temp = tempfile.mkstemp(dir=self.dir, prefix=".download-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in verified_chunks(transport, key, "remote", meter, objects=False):
                    out.write(chunk)
            os.replace(temp, self.path(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def open(self, transport: Transport, pack: PackRef, meter: Meter) -> tuple[PackFile, bool]:
        """Return the pack as a :class:`PackFile`, downloading it unless cached and intact."""
        path = self.path(pack.key)
        if os.path.exists(path):
            try:
                return PackFile(path, check_trailer=True), False
            except InvalidResponse:
                os.unlink(path)  # damaged in the cache: fetch it again
        self.fetch(transport, pack.key, meter)
        return PackFile(path, check_trailer=False), True


def verified_chunks(
    transport: Transport,
    key: PackKey,
    side: str,
    meter: Meter,
    *,
    objects: bool,
    relayed: bool = False,
) -> Iterator[bytes]:
    """Yield pack ``key`` from ``transport``, each chunk fed to a :class:`PackVerifier`.

    A damaged pack raises from inside the iteration, before the consumer can commit
    what it wrote; errors name the pack and say it is missing or corrupt on the
    ``side`` it came from. ``objects`` re-hashes every object (PACK-14); ``relayed``
    counts the bytes as sent on as well as received (mirror).
    """
    what = f"pack {key.hex()}"
    verifier = PackVerifier(objects=objects)
    try:
        for chunk in transport.download_pack_stream(key):
            verifier.feed(chunk)
            meter.add(bytes_in=len(chunk), bytes_out=len(chunk) if relayed else 0)
            yield chunk
        verifier.finish()
    except PackNotFound as error:
        raise PackNotFound(f"{what} is missing on the {side}") from error
    except (InvalidResponse, PayloadTooLarge) as error:
        raise relabel(error, f"{what} is corrupt on the {side}") from error


def check_dest(dest: str, replace: bool) -> None:
    """Refuse a destination a pull would clobber, before anything is downloaded."""
    if not os.path.lexists(dest) or replace:
        return
    if not os.path.isdir(dest) or os.path.islink(dest) or os.listdir(dest):
        raise FileExistsError(
            f"{dest} exists and is not an empty directory "
            "(replace=True, or --replace, replaces it whole)"
        )


def swap_in(stage: str, dest: str, replace: bool) -> None:
    """Move ``stage`` to ``dest``; an existing ``dest`` is moved aside first, then deleted."""
    check_dest(dest, replace)
    if not os.path.lexists(dest):
        os.rename(stage, dest)
        return
    aside = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.old-", dir=os.path.dirname(dest))
    old = os.path.join(aside, "old")
    os.rename(dest, old)
    try:
        os.rename(stage, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staged(dest: str, replace: bool) -> Iterator[str]:
    """A new directory beside ``dest`` to build a tree in, swapped in if the block ends well.

    Beside, so the swap is a rename on one file system; on any failure (in the
    block or the swap) the stage is removed and ``dest`` is left as it was.
    """
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.pull-", dir=parent)
    try:
        yield stage
        os.chmod(stage, 0o755)  # noqa: S103 - mkdtemp makes it 0o700; a tree is readable
        swap_in(stage, dest, replace)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
