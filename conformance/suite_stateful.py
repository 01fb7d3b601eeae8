"""A Hypothesis state machine: the transport and a dict model, step by step."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from mkit_transport import (
    Hash,
    PackKey,
    PackNotFound,
    Ref,
    RefConflict,
    RefWriteCondition,
    Transport,
)

from .base import NAMESPACE_ROOT, SuiteBase, remove_namespace
from .harness import Harness

__all__ = ["StatefulSuite"]

spec = pytest.mark.spec

_TAILS = st.sampled_from(["a", "b", "a/b", "a/c", "b/a", "ab", "a/b/c"])
_PREFIXES = st.sampled_from(["", "a", "a/", "a/b", "b", "ab", "zz"])
_VALUES = st.sampled_from([Hash.of(bytes([i])) for i in range(4)])
_CONTENTS = st.sampled_from([b"", b"x", b"hello", b"\x00" * 300, bytes(range(256)) * 40])


def _machine(harness: Harness) -> type[RuleBasedStateMachine]:
    class TransportMachine(RuleBasedStateMachine):
        """Every operation hits the transport and the model; they must always agree."""

        def __init__(self) -> None:
            super().__init__()
            self.transport: Transport = harness.open(None)
            self.ns = f"{NAMESPACE_ROOT}/{uuid.uuid4().hex}"
            self.salt = os.urandom(8)
            self.refs: dict[str, Hash] = {}
            self.packs: dict[PackKey, bytes] = {}

        def teardown(self) -> None:
            try:
                remove_namespace(self.transport, self.ns)
            finally:
                self.transport.close()

        def _pack(self, content: bytes) -> tuple[bytes, PackKey]:
            data = self.salt + content
            return data, PackKey.of(data)

        @rule(content=_CONTENTS)
        def upload(self, content: bytes) -> None:
            data, key = self._pack(content)
            self.transport.upload_pack(data, key)
            self.packs[key] = data

        @rule(content=_CONTENTS)
        def download(self, content: bytes) -> None:
            data, key = self._pack(content)
            if key in self.packs:
                assert self.transport.download_pack(key) == data
            else:
                with pytest.raises(PackNotFound):
                    self.transport.download_pack(key)
            assert self.transport.pack_exists(key) == (key in self.packs)

        @rule(
            tail=_TAILS,
            value=_VALUES,
            kind=st.sampled_from(["any", "missing", "match"]),
            expected=_VALUES,
            use_current=st.booleans(),
        )
        def update(
            self, tail: str, value: Hash, kind: str, expected: Hash, use_current: bool
        ) -> None:
            name = f"{self.ns}/{tail}"
            current = self.refs.get(name)
            if kind == "any":
                condition = RefWriteCondition.ANY
            elif kind == "missing":
                condition = RefWriteCondition.MISSING
            else:
                target = current if use_current and current is not None else expected
                condition = RefWriteCondition.match(target)
            if condition.allows(current):
                self.transport.update_ref(name, condition, value)
                self.refs[name] = value
            else:
                with pytest.raises(RefConflict) as caught:
                    self.transport.update_ref(name, condition, value)
                if caught.value.known:
                    assert caught.value.current == current

        @rule(tail=_TAILS)
        def read(self, tail: str) -> None:
            name = f"{self.ns}/{tail}"
            assert self.transport.read_ref(name) == self.refs.get(name)

        @rule(prefix=_PREFIXES)
        def listing(self, prefix: str) -> None:
            full = f"{self.ns}/{prefix}" if prefix else self.ns
            head = full.rstrip("/") + "/"
            want = sorted(
                (
                    Ref(name[len(head) :], value)
                    for name, value in self.refs.items()
                    if name.startswith(head)
                ),
                key=lambda ref: ref.name,
            )
            assert self.transport.list_refs(full) == want

        @invariant()
        def namespace_matches_model(self) -> None:
            listed = {f"{self.ns}/{r.name}": r.hash for r in self.transport.list_refs(self.ns)}
            assert listed == self.refs

    return TransportMachine


class StatefulSuite(SuiteBase):
    """Random sequences of operations agree with a dict model."""

    @spec("T-STATE-1")
    @pytest.mark.slow
    def test_state_machine(self, harness: Harness) -> None:
        run_state_machine_as_test(
            _machine(harness),
            settings=settings(
                max_examples=harness.stateful_examples,
                stateful_step_count=harness.stateful_steps,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            ),
        )
