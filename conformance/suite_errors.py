"""Error mapping: a store that fails is reported with the class that says how.

Through the harness's :class:`~.harness.StoreFaults` hook the backing store itself
fails (permission denied, out of space, a dropped connection), under the real
transport. A transient failure raised as permanent is never retried; a permanent one
raised as transient is retried for nothing and hides what the user must fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from mkit_transport import AccessDenied, PackNotFound, RetryPolicy, Transport
from mkit_transport.errors import TransportError
from mkit_transport.retry import is_retryable

from .base import SuiteBase, make_pack, value_of
from .harness import Harness

__all__ = ["NOT_APPLICABLE", "ErrorSuite"]

#: How a skip reason starts when the check does not apply to the store (not a gap).
NOT_APPLICABLE = "not applicable:"

spec = pytest.mark.spec

#: The verbs checked under each fault: name -> (reads?, call).
_Verb = Callable[[Transport, str, bytes, object], object]
VERBS: dict[str, tuple[bool, _Verb]] = {
    "read_ref": (True, lambda t, ns, data, key: t.read_ref(f"{ns}/r")),
    "list_refs": (True, lambda t, ns, data, key: t.list_refs(ns)),
    "pack_exists": (True, lambda t, ns, data, key: t.pack_exists(key)),  # type: ignore[arg-type]
    "download_pack": (True, lambda t, ns, data, key: t.download_pack(key)),  # type: ignore[arg-type]
    "write_ref": (False, lambda t, ns, data, key: t.write_ref(f"{ns}/w", value_of("w"))),
    "upload_pack": (False, lambda t, ns, data, key: t.upload_pack(data, key)),  # type: ignore[arg-type]
}


@contextlib.contextmanager
def _fault(harness: Harness, kind: str, times: int | None = None) -> Iterator[None]:
    if harness.faults is None:
        pytest.skip("no fault hook: give the Harness `faults` to check the error mapping")
    injected = harness.faults.inject(kind, times)
    if injected is None:
        # Declared by the store's own hook (a local file has no connection to drop): the
        # runner reports it as not applicable, not as a gap in what was checked.
        pytest.skip(f"{NOT_APPLICABLE} the store's fault hook says it cannot fail as {kind}")
    with injected:
        yield


class ErrorSuite(SuiteBase):
    """Backend failures map to the right error class, retried only when transient."""

    @pytest.fixture
    def client(self, harness: Harness) -> Iterator[Transport]:
        """A client that never retries: each failure shows as raised."""
        opened = harness.open(RetryPolicy(retries=0))
        try:
            yield opened
        finally:
            opened.close()

    @spec("T-ERR-1")
    @pytest.mark.parametrize("verb", sorted(VERBS))
    def test_permission_denied_is_access_denied(
        self, harness: Harness, client: Transport, ns: str, salt: bytes, verb: str
    ) -> None:
        stored, stored_key = make_pack(salt, "denied-stored")
        new, new_key = make_pack(salt, "denied-new")
        client.write_ref(f"{ns}/r", value_of("r"))
        client.upload_pack(stored, stored_key)
        data, key = (new, new_key) if verb == "upload_pack" else (stored, stored_key)
        _, call = VERBS[verb]
        with _fault(harness, "permission_denied"), pytest.raises(AccessDenied):
            call(client, ns, data, key)
        self._nothing_written(client, ns, new_key)

    @spec("T-ERR-1")
    @pytest.mark.parametrize("verb", ["write_ref", "upload_pack"])
    def test_out_of_space_is_permanent_and_writes_nothing(
        self, harness: Harness, client: Transport, ns: str, salt: bytes, verb: str
    ) -> None:
        data, key = make_pack(salt, "full")
        _, call = VERBS[verb]
        with _fault(harness, "out_of_space"), pytest.raises(TransportError) as caught:
            call(client, ns, data, key)
        assert not is_retryable(caught.value), f"{caught.value!r} would be retried"
        assert not isinstance(caught.value, AccessDenied | PackNotFound)
        self._nothing_written(client, ns, key)

    @spec("T-ERR-1")
    @pytest.mark.parametrize("verb", sorted(VERBS))
    def test_a_dropped_connection_is_transient(
        self, harness: Harness, client: Transport, ns: str, salt: bytes, verb: str
    ) -> None:
        data, key = make_pack(salt, f"dropped-{verb}")
        if verb != "upload_pack":
            client.upload_pack(data, key)
        client.write_ref(f"{ns}/r", value_of("r"))
        _, call = VERBS[verb]
        with _fault(harness, "connection_dropped"), pytest.raises(TransportError) as caught:
            call(client, ns, data, key)
        assert is_retryable(caught.value), f"{caught.value!r} would not be retried"
        sleeps: list[float] = []
        with harness.open(RetryPolicy(sleep=sleeps.append)) as retrying:
            with _fault(harness, "connection_dropped", times=1):
                call(retrying, ns, data, key)
            assert sleeps == [1], "one drop, one retry"

    @staticmethod
    def _nothing_written(client: Transport, ns: str, key: object) -> None:
        assert client.read_ref(f"{ns}/w") is None, "a refused write changed the ref"
        assert client.pack_exists(key) is False, "a refused upload stored the pack"  # type: ignore[arg-type]
