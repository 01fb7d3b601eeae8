"""Fixtures every topic suite shares; a transport's test class overrides ``harness``."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from mkit_transport._extras import require

require("the conformance suite", "pytest", "hypothesis")  # before pytest: name the extra

import pytest

from mkit_transport import Hash, PackKey, RefWriteCondition, Transport

from .harness import Backdoor, Harness

__all__ = ["SuiteBase", "make_pack", "remove_namespace", "value_of"]

#: The ref namespace every conformance test writes under (plus a per-test uuid).
NAMESPACE_ROOT = "refs/mkit-conformance"


def value_of(label: str) -> Hash:
    """A deterministic ref value for a label."""
    return Hash.of(label.encode())


def make_pack(salt: bytes, label: str, size: int = 1024) -> tuple[bytes, PackKey]:
    """Salted pseudo-pack bytes (unique per test run) and their key."""
    seed = salt + label.encode()
    block = Hash.of(seed).hex().encode()
    data = (seed + block * (size // len(block) + 1))[:size]
    return data, PackKey.of(data)


def remove_namespace(transport: Transport, ns: str) -> int:
    """Delete every ref a test wrote under ``ns``; return how many went.

    The suite runs against shared remotes, so it leaves nothing behind, also when a
    test failed. Best effort by design: the store may be the broken one under test,
    and a cleanup error must not hide the test's own verdict (the delete verb has
    its own tests in the lifecycle suite).
    """
    removed = 0
    with contextlib.suppress(Exception):
        for ref in transport.list_refs(ns):
            with contextlib.suppress(Exception):
                transport.delete_ref(f"{ns}/{ref.name}", RefWriteCondition.ANY)
                removed += 1
    return removed


class SuiteBase:
    """The fixtures the topic suites use. Override ``harness`` in your test class."""

    @pytest.fixture
    def harness(self) -> Harness:
        raise pytest.UsageError(
            "override the `harness` fixture in your test class to return a "
            "mkit_transport.conformance.Harness for the transport under test"
        )

    @pytest.fixture
    def transport(self, harness: Harness) -> Iterator[Transport]:
        opened = harness.open(None)
        try:
            yield opened
        finally:
            opened.close()

    @pytest.fixture
    def ns(self, harness: Harness) -> Iterator[str]:
        """Yield this test's own ref namespace, e.g. ``refs/mkit-conformance/<uuid>``.

        Every ref the test wrote under it is deleted afterwards, pass or fail.
        """
        name = f"{NAMESPACE_ROOT}/{uuid.uuid4().hex}"
        yield name
        with contextlib.suppress(Exception):
            cleaner = harness.open(None)
            try:
                remove_namespace(cleaner, name)
            finally:
                cleaner.close()

    @pytest.fixture
    def salt(self) -> bytes:
        """Random bytes mixed into every pack this test makes, so keys never repeat."""
        return os.urandom(16)

    @pytest.fixture
    def backdoor(self, harness: Harness) -> Backdoor:
        if harness.backdoor is None:
            pytest.skip("no back door into the store: give the Harness a `backdoor` to check this")
        return harness.backdoor
