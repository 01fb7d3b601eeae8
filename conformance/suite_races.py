"""Races: concurrent clients, one CAS, exactly one winner; counters that end exact.

Workers are separate processes when the store is shared across processes (and the
harness gives a URL), threads otherwise. Each worker opens its own client.
"""

from __future__ import annotations

from typing import Any

import pytest

from mkit_transport import Hash, RefWriteCondition, Transport
from mkit_transport.urls import scheme_target

from .base import SuiteBase
from .harness import Harness
from .workers import (
    Limits,
    Opener,
    UrlOpener,
    any_vs_match_worker,
    check_counter,
    counter_value,
    counter_worker,
    one_winner_worker,
    run_workers,
    value,
)

__all__ = ["RaceSuite", "check_any_vs_match"]

spec = pytest.mark.spec


def _opener(harness: Harness, transport: Transport) -> tuple[Opener, bool]:
    """Processes where the store is shared across them and a child can open the URL.

    A child opens the URL by scheme, re-registering a scheme the parent registered
    with ``register_transport`` from its importable ``"module:attr"``; a scheme
    registered with a lambda or nested function cannot be, so it races in threads.
    """
    if harness.url is not None and type(transport).shared_across_processes:
        target = scheme_target(harness.url.split("://", 1)[0])
        if target is not None:
            return UrlOpener(harness.url, dict(harness.options), target), True
    return (lambda: harness.open(None)), False


def check_any_vs_match(records: list[list[tuple[Any, ...]]], initial: Hash) -> list[str]:
    """Find lost updates in an ANY-versus-match history; return what went wrong.

    Every successful ``match(v) -> w`` write says ``w`` came right after ``v``. When
    the ANY writer writes ``R`` and then reads ``x``, walking back from ``x`` through
    those links must reach ``R``: reaching any other start (an older ANY value or
    the initial value) means a match write overwrote ``R`` without expecting it.
    """
    parent: dict[Hash, Hash] = {}
    problems = []
    for worker in records:
        for record in worker:
            if record[0] == "match":
                _, expected, new = record
                if new in parent:
                    problems.append(f"{new.hex()[:12]} written twice")
                parent[new] = expected
    for worker in records:
        for record in worker:
            if record[0] != "any":
                continue
            _, written, observed = record
            node, steps = observed, 0
            while node != written and node in parent and steps < 1_000_000:
                node, steps = parent[node], steps + 1
            if node != written:
                start = "the initial value" if node == initial else node.hex()[:12]
                problems.append(
                    f"ANY wrote {written.hex()[:12]} but the history read back leads to {start}"
                )
    return problems


class RaceSuite(SuiteBase):
    """CAS stays atomic under real concurrency."""

    @spec("T-RACE-1")
    @pytest.mark.slow
    def test_one_winner_per_round(self, transport: Transport, harness: Harness, ns: str) -> None:
        initial = value(f"{ns}/match/initial")
        transport.update_ref(f"{ns}/match", RefWriteCondition.MISSING, initial)
        opener, processes = _opener(harness, transport)
        results = run_workers(
            one_winner_worker,
            opener,
            ns,
            harness.race_workers,
            harness.race_rounds,
            processes=processes,
            limits=Limits(harness.race_wait, harness.race_stall, harness.race_budget),
        )
        flat = [row for worker in results for row in worker]
        previous = initial
        for r in range(harness.race_rounds):
            match_rows = [row for row in flat if row[0] == "match" and row[1] == r]
            assert len(match_rows) == harness.race_workers
            assert {row[3] for row in match_rows} == {previous}, "all read the same value"
            winners = [row for row in match_rows if row[4]]
            assert len(winners) == 1, f"round {r}: {len(winners)} match winners"
            winner_value = value(f"{ns}/match/{r}/{winners[0][2]}")
            for row in match_rows:
                if not row[4] and row[6]:
                    assert row[5] == winner_value, "a loser sees the winner's value"
            missing_rows = [row for row in flat if row[0] == "missing" and row[1] == r]
            missing_winners = [row for row in missing_rows if row[4]]
            assert len(missing_winners) == 1, f"round {r}: {len(missing_winners)} MISSING wins"
            missing_value = value(f"{ns}/missing/{r}/{missing_winners[0][2]}")
            assert transport.read_ref(f"{ns}/missing/{r}") == missing_value
            for row in missing_rows:
                if not row[4] and row[6]:
                    assert row[5] == missing_value
            previous = winner_value
        assert transport.read_ref(f"{ns}/match") == previous

    @spec("T-RACE-2")
    @pytest.mark.slow
    def test_counter_of_cas_increments_is_exact(
        self, transport: Transport, harness: Harness, ns: str
    ) -> None:
        transport.update_ref(f"{ns}/counter", RefWriteCondition.MISSING, counter_value(ns, 0))
        opener, processes = _opener(harness, transport)
        results = run_workers(
            counter_worker,
            opener,
            ns,
            harness.counter_workers,
            harness.counter_increments,
            processes=processes,
            limits=Limits(harness.race_wait, harness.race_stall, harness.race_budget),
        )
        rows = [row for worker in results for row in worker]
        check_counter(rows, transport.read_ref(f"{ns}/counter"), ns)

    @spec("T-RACE-3")
    @pytest.mark.slow
    def test_any_racing_match_never_loses_an_update(
        self, transport: Transport, harness: Harness, ns: str
    ) -> None:
        initial = value(f"{ns}/mixed/initial")
        transport.update_ref(f"{ns}/mixed", RefWriteCondition.MISSING, initial)
        opener, processes = _opener(harness, transport)
        results = run_workers(
            any_vs_match_worker,
            opener,
            ns,
            max(3, harness.race_workers),
            harness.counter_increments * 4,
            processes=processes,
            limits=Limits(harness.race_wait, harness.race_stall, harness.race_budget),
        )
        problems = check_any_vs_match(results, initial)
        assert problems == [], "lost updates:\n" + "\n".join(problems[:10])
        # The run's budget may cut the ANY writes short on a slow machine; at least
        # one is always made, so the check above had something to check.
        assert any(row[0] == "any" for row in results[0]), results[0]
