"""The store itself: ``init_store`` is idempotent and leaves a usable store."""

from __future__ import annotations

import pytest

from mkit_transport import Transport

from .base import SuiteBase, make_pack, value_of

__all__ = ["StoreSuite"]

spec = pytest.mark.spec


class StoreSuite(SuiteBase):
    """Creating a store: on one that is there, init changes nothing."""

    @spec("T-INIT-1")
    def test_init_on_a_store_with_data_changes_nothing(
        self, transport: Transport, salt: bytes, ns: str
    ) -> None:
        data, key = make_pack(salt, "before-init")
        transport.upload_pack(data, key)
        transport.write_ref(f"{ns}/kept", value_of("kept"))
        assert transport.init_store() is False, "a store holding data is already there"
        assert transport.init_store() is False
        assert transport.download_pack(key) == data
        assert transport.read_ref(f"{ns}/kept") == value_of("kept")
        assert [ref.name for ref in transport.list_refs(ns)] == ["kept"]

    @spec("T-INIT-2")
    def test_the_store_is_usable_after_init(
        self, transport: Transport, salt: bytes, ns: str
    ) -> None:
        assert isinstance(transport.init_store(), bool)
        assert transport.init_store() is False, "the second init finds the store"
        data, key = make_pack(salt, "after-init")
        transport.upload_pack(data, key)
        assert transport.download_pack(key) == data
        transport.write_ref(f"{ns}/after", value_of("after"))
        assert transport.read_ref(f"{ns}/after") == value_of("after")
