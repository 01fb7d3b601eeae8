"""An example third-party transport: packs and refs in one SQLite database file.

``mkit+sqlite:///absolute/path/store.db``. Written from the README's "Writing a
transport" alone, as the page a third party copies: the primitives (packs, refs and
the lifecycle verbs gc needs), a ``from_url`` that follows the contract, the error
mapping, and (for its tests, see ``examples/test_sqlite_transport.py``) a back door
and a fault hook.

Every operation opens its own connection (SQLite connections are not shared across
threads), so the transport is safe from several threads and several processes: a
write runs in a ``BEGIN IMMEDIATE`` transaction, which takes the database's write
lock before it reads, so a compare-and-swap is decided atomically with its write.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Self

from mkit_transport import (
    AccessDenied,
    Hash,
    PackInfo,
    PackKey,
    PackNotFound,
    RefConflict,
    RefWriteCondition,
    RemoteError,
    RetryPolicy,
    ServerError,
    Transport,
)
from mkit_transport.errors import InvalidArgument, TransportError
from mkit_transport.refs import decode_ref_value, encode_ref_value
from mkit_transport.urls import pop_retry, reject_options, split_url

__all__ = ["SCHEME", "SqliteBackdoor", "SqliteFaults", "SqliteTransport"]

SCHEME = "mkit+sqlite"

_SCHEMA = (
    # mtime: seconds since the epoch when the pack was stored (list_packs reports it).
    "CREATE TABLE IF NOT EXISTS packs (key BLOB PRIMARY KEY, data BLOB NOT NULL,"
    " mtime REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))",
    "CREATE TABLE IF NOT EXISTS refs (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (what TEXT PRIMARY KEY)",
)

#: How the module connects; :class:`SqliteFaults` swaps it to make the store fail.
connect: Callable[..., sqlite3.Connection] = sqlite3.connect


def _mapped(error: sqlite3.Error, what: str) -> TransportError:
    """SQLite's errors in the taxonomy: how the caller should react, not what broke."""
    text = str(error).lower()
    if "readonly" in text or "unable to open" in text or "permission" in text:
        return AccessDenied(f"{what}: {error}")
    if "locked" in text or "busy" in text:  # another writer held the lock too long
        return ServerError(f"{what}: {error}", transient=True)
    return RemoteError(f"{what}: {error}")  # full disk, corruption: permanent


class SqliteTransport(Transport):
    """Packs and compare-and-swap refs in a SQLite database file."""

    schemes = (SCHEME,)

    def __init__(self, path: str | os.PathLike[str], *, retry: RetryPolicy | None = None) -> None:
        super().__init__(retry=retry)
        self.path = os.fspath(path)

    @classmethod
    def from_url(cls, url: str, **options: object) -> Self:
        """Open ``mkit+sqlite:///absolute/path.db`` (option: ``retries``)."""
        parts = split_url(url, options)
        retry = pop_retry(options)
        reject_options(url, options)
        if parts.netloc or not parts.path.startswith("/"):
            raise InvalidArgument(f"{url!r}: expected mkit+sqlite:///absolute/path.db")
        return cls(parts.path, retry=retry)

    @contextlib.contextmanager
    def _db(self, what: str, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection for one operation; a write holds the write lock throughout."""
        try:
            db = connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as error:
            raise _mapped(error, what) from error
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            for statement in _SCHEMA:
                db.execute(statement)
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as error:
            raise _mapped(error, what) from error
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()

    # -- packs -----------------------------------------------------------------------

    def _put_pack(self, key: PackKey, data: bytes) -> None:
        with self._db(f"pack {key.hex()}", write=True) as db:
            db.execute("INSERT OR IGNORE INTO packs (key, data) VALUES (?, ?)", (bytes(key), data))

    def _get_pack(self, key: PackKey) -> bytes:
        with self._db(f"pack {key.hex()}") as db:
            row = db.execute("SELECT data FROM packs WHERE key = ?", (bytes(key),)).fetchone()
        if row is None:
            raise PackNotFound(f"pack {key.hex()} not found")
        return bytes(row[0])

    def _has_pack(self, key: PackKey) -> bool:
        with self._db(f"pack {key.hex()}") as db:
            row = db.execute("SELECT 1 FROM packs WHERE key = ?", (bytes(key),)).fetchone()
        return row is not None

    def _pack_size(self, key: PackKey) -> int:
        with self._db(f"pack {key.hex()}") as db:
            row = db.execute(
                "SELECT length(data) FROM packs WHERE key = ?", (bytes(key),)
            ).fetchone()
        if row is None:
            raise PackNotFound(f"pack {key.hex()} not found")
        return int(row[0])

    def _list_packs(self, after: PackKey | None, limit: int) -> list[PackInfo]:
        with self._db("pack listing") as db:
            rows = db.execute(
                "SELECT key, length(data), mtime FROM packs WHERE key > ? ORDER BY key LIMIT ?",
                (b"" if after is None else bytes(after), limit),
            ).fetchall()
        return [PackInfo(PackKey(bytes(k)), int(n), float(t)) for k, n, t in rows]

    def _delete_pack(self, key: PackKey) -> None:
        with self._db(f"pack {key.hex()}", write=True) as db:
            db.execute("DELETE FROM packs WHERE key = ?", (bytes(key),))

    # -- refs ------------------------------------------------------------------------

    @staticmethod
    def _current(db: sqlite3.Connection, name: str) -> Hash | None:
        row = db.execute("SELECT value FROM refs WHERE name = ?", (name,)).fetchone()
        return None if row is None else decode_ref_value(bytes(row[0]), remote=False, name=name)

    def _check(self, db: sqlite3.Connection, name: str, condition: RefWriteCondition) -> None:
        """Refuse a write whose condition does not hold (inside its write transaction)."""
        current = self._current(db, name)
        if not condition.allows(current):
            raise RefConflict(
                f"ref {name} holds {current.hex() if current else 'nothing'}",
                name=name,
                current=current,
                known=True,
            )

    def _read_ref(self, name: str) -> Hash | None:
        with self._db(f"ref {name}") as db:
            return self._current(db, name)

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        with self._db(f"ref {name}", write=True) as db:
            self._check(db, name, condition)
            db.execute("INSERT OR REPLACE INTO refs VALUES (?, ?)", (name, encode_ref_value(value)))

    def _delete_ref(self, name: str, condition: RefWriteCondition) -> None:
        with self._db(f"ref {name}", write=True) as db:
            self._check(db, name, condition)
            db.execute("DELETE FROM refs WHERE name = ?", (name,))

    def _list_refs(self, prefix: str) -> Iterable[tuple[str, Hash]]:
        # The names under "p/" are the range ["p/", "p0"): '0' follows '/' in byte order.
        low, high = (f"{prefix}/", f"{prefix}0") if prefix else ("", "\U0010ffff")
        with self._db(f"refs under {prefix!r}") as db:
            rows = db.execute(
                "SELECT name, value FROM refs WHERE name >= ? AND name < ?", (low, high)
            ).fetchall()
        return [(n, decode_ref_value(bytes(v), remote=False, name=n)) for n, v in rows]

    # -- the store -------------------------------------------------------------------

    def _init_store(self) -> bool:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._db("store", write=True) as db:
            held = db.execute(
                "SELECT (SELECT count(*) FROM meta) + (SELECT count(*) FROM packs)"
                " + (SELECT count(*) FROM refs)"
            ).fetchone()[0]
            if held:
                return False
            db.execute("INSERT INTO meta VALUES ('created')")
            return True


class SqliteBackdoor:
    """The suite's back door: the stored bytes, read and written with plain SQL."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def _run(self, sql: str, args: tuple[object, ...]) -> bytes | None:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            for statement in _SCHEMA:
                db.execute(statement)
            row = db.execute(sql, args).fetchone()
            return None if row is None else bytes(row[0])
        finally:
            db.close()

    def read_ref_bytes(self, name: str) -> bytes | None:
        """The stored bytes of a ref, as stored."""
        return self._run("SELECT value FROM refs WHERE name = ?", (name,))

    def write_ref_bytes(self, name: str, data: bytes) -> None:
        """Store any bytes as a ref's value (the suite plants malformed ones)."""
        self._run("INSERT OR REPLACE INTO refs VALUES (?, ?)", (name, data))

    def read_pack_bytes(self, key: PackKey) -> bytes | None:
        """The stored bytes of a pack, as stored."""
        return self._run("SELECT data FROM packs WHERE key = ?", (bytes(key),))

    def write_pack_bytes(self, key: PackKey, data: bytes) -> None:
        """Store any bytes under a key (the suite plants corrupt packs)."""
        self._run("INSERT OR REPLACE INTO packs (key, data) VALUES (?, ?)", (bytes(key), data))


class SqliteFaults:
    """The suite's fault hook: SQLite fails as a read-only or full database would.

    A local database has no connection to drop, so ``connection_dropped`` is not
    offered (the suite lists those checks as not checked).
    """

    _MESSAGES = {
        "permission_denied": "attempt to write a readonly database",
        "out_of_space": "database or disk is full",
    }

    def inject(
        self, kind: str, times: int | None = None
    ) -> contextlib.AbstractContextManager[None] | None:
        """While open, connecting fails as a read-only or full database does."""
        message = self._MESSAGES.get(kind)
        return None if message is None else self._failing(message, times)

    @contextlib.contextmanager
    def _failing(self, message: str, times: int | None) -> Iterator[None]:
        global connect
        left = [times]

        def failing(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            if left[0] is None or left[0] > 0:
                if left[0] is not None:
                    left[0] -= 1
                raise sqlite3.OperationalError(message)
            opened: sqlite3.Connection = sqlite3.connect(*args, **kwargs)
            return opened

        connect = failing
        try:
            yield
        finally:
            connect = sqlite3.connect
