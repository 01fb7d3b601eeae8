"""Race workers: plain functions that run in separate processes (or threads).

They live in their own module so ``multiprocessing`` (spawn) can import them in a
child by name. Each opens its own transport, synchronises with its peers on a
barrier, and returns plain tuples that pickle.

Time never decides a race test's verdict. A worker that loops (the counter, the
ANY-versus-match writers) stops at its target or when the run's :data:`BUDGET` is
spent, whichever comes first, and reports what it did; the suite then checks that
what was reported adds up (no lost update, one winner), not how much got done. A
slow machine therefore finishes fewer increments, never a failed test. The only
time-based failure is a stall: no write landing anywhere for :data:`NO_PROGRESS`
seconds (a livelock or a hang), which a worker reports as such.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mkit_transport import (
    Hash,
    RefConflict,
    RefWriteCondition,
    Transport,
    open_transport,
)

__all__ = ["Opener", "UrlOpener", "check_counter", "counter_count", "counter_value", "run_workers"]

#: How long a worker waits on a barrier for its peers, in seconds (the first wait
#: also covers starting the worker processes on a loaded machine).
WAIT = 120.0
#: Looping workers start no new operation after this many seconds from the start
#: barrier: it bounds a test's duration, never its verdict. (WAIT + BUDGET stays
#: under pytest-timeout's 300 s, so a slow start-up cannot turn into a timeout.)
BUDGET = 90.0
#: A looping worker that sees no write land (its own or a peer's) for this long
#: reports a stall: CAS that makes no progress at all is a livelock or a hang.
NO_PROGRESS = 60.0


class _Barrier(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...


class _Event(Protocol):
    def set(self) -> None: ...
    def is_set(self) -> bool: ...


class Opener(Protocol):
    """Something that opens a new client on the store under test."""

    def __call__(self) -> Transport: ...


@dataclass(frozen=True)
class UrlOpener:
    """Opens ``open_transport(url, **options)``; picklable, so processes can use it."""

    url: str
    options: dict[str, object] = field(default_factory=dict)

    def __call__(self) -> Transport:
        return open_transport(self.url, **self.options)


def value(label: str) -> Hash:
    return Hash.of(label.encode())


def counter_value(ns: str, count: int, worker: int = 0) -> Hash:
    """The counter's value after ``count`` increments, the last one by ``worker``.

    The count is readable from the value (:func:`counter_count`), and each writer's
    values are its own. That matters: when a retried CAS ends in a conflict, the
    transport reads the ref back and takes "it holds my value" as "my earlier
    attempt landed". Were two workers' values for the same count equal, a worker
    whose attempt never landed would see a peer's equal value and count an
    increment that did not happen.
    """
    return Hash(
        bytes(Hash.of(ns.encode()))[:20] + count.to_bytes(8, "big") + worker.to_bytes(4, "big")
    )


def counter_count(ns: str, current: Hash) -> int:
    """The count a :func:`counter_value` encodes (asserting it is one, for ``ns``)."""
    raw = bytes(current)
    assert raw[:20] == bytes(Hash.of(ns.encode()))[:20], f"{current.hex()[:12]} is not a counter"
    return int.from_bytes(raw[20:28], "big")


def _wait(barrier: _Barrier) -> None:
    """Wait for the peers; a peer that never arrives is reported as no progress."""
    try:
        barrier.wait(WAIT)
    except threading.BrokenBarrierError as error:
        raise AssertionError(
            f"no progress: a peer did not reach the barrier within {WAIT:.0f} s "
            "(hung or failed; see the other workers' errors)"
        ) from error


def one_winner_worker(
    opener: Opener, barrier: _Barrier, event: _Event, ns: str, worker: int, rounds: int
) -> list[tuple[Any, ...]]:
    """Each round: all read the ref, then all try ``match(read)``; also a MISSING race."""
    out: list[tuple[Any, ...]] = []
    with opener() as transport:
        for r in range(rounds):
            _wait(barrier)
            seen = transport.read_ref(f"{ns}/match")
            _wait(barrier)  # nobody writes before everybody has read
            mine = value(f"{ns}/match/{r}/{worker}")
            try:
                assert seen is not None
                transport.update_ref(f"{ns}/match", RefWriteCondition.match(seen), mine)
                out.append(("match", r, worker, seen, True, None, False))
            except RefConflict as lost:
                out.append(("match", r, worker, seen, False, lost.current, lost.known))
            mine = value(f"{ns}/missing/{r}/{worker}")
            try:
                transport.update_ref(f"{ns}/missing/{r}", RefWriteCondition.MISSING, mine)
                out.append(("missing", r, worker, None, True, None, False))
            except RefConflict as lost:
                out.append(("missing", r, worker, None, False, lost.current, lost.known))
            _wait(barrier)  # every write of this round is done before the next reads
    return out


def counter_worker(
    opener: Opener, barrier: _Barrier, event: _Event, ns: str, worker: int, increments: int
) -> list[tuple[Any, ...]]:
    """Read-modify-CAS increments of a counter whose values encode the count.

    Stops after ``increments`` successes or when :data:`BUDGET` is spent; returns
    ``("counter", worker, done, conflicts, stalled)``, where ``stalled`` is how long
    it had seen no write land when it gave up on a stall (0.0 if it did not).
    """
    done = 0
    conflicts = 0
    stalled = 0.0
    with opener() as transport:
        _wait(barrier)
        deadline = time.monotonic() + BUDGET
        last_seen: Hash | None = None
        last_move = time.monotonic()
        while done < increments:
            now = time.monotonic()
            if now - last_move >= NO_PROGRESS:
                stalled = now - last_move
                break
            if now >= deadline:
                break
            current = transport.read_ref(f"{ns}/counter")
            assert current is not None
            if current != last_seen:
                last_seen, last_move = current, time.monotonic()
            count = counter_count(ns, current)
            try:
                transport.update_ref(
                    f"{ns}/counter",
                    RefWriteCondition.match(current),
                    counter_value(ns, count + 1, worker),
                )
                done += 1
                last_move = time.monotonic()
            except RefConflict:
                conflicts += 1
    return [("counter", worker, done, conflicts, stalled)]


def check_counter(rows: list[tuple[Any, ...]], final: Hash | None, ns: str) -> int:
    """Check a counter race's outcome; return the number of increments that landed.

    Fails on a stall (no progress at all for :data:`NO_PROGRESS` seconds) and on a
    lost update (the counter does not equal the sum of the increments its writers
    saw succeed). How many increments got done in the time is never checked.
    """
    stalls = [f"worker {row[1]}: nothing landed for {row[4]:.0f} s" for row in rows if row[4]]
    assert not stalls, "livelock, no CAS made progress:\n" + "\n".join(stalls)
    succeeded = sum(row[2] for row in rows)
    assert succeeded > 0, f"no increment succeeded: {rows}"
    assert final is not None, "the counter ref vanished"
    landed = counter_count(ns, final)
    assert landed == succeeded, (
        f"lost update: {succeeded} increments succeeded but the counter reads {landed}: {rows}"
    )
    return landed


def any_vs_match_worker(
    opener: Opener, barrier: _Barrier, event: _Event, ns: str, worker: int, writes: int
) -> list[tuple[Any, ...]]:
    """Worker 0 writes with ANY and reads back; the others increment with ``match``."""
    out: list[tuple[Any, ...]] = []
    name = f"{ns}/mixed"
    with opener() as transport:
        _wait(barrier)
        deadline = time.monotonic() + BUDGET
        if worker == 0:
            try:
                for j in range(writes):
                    if j and time.monotonic() >= deadline:
                        break  # the budget bounds the run; what was written is checked
                    mine = value(f"{ns}/any/{j}")
                    transport.update_ref(name, RefWriteCondition.ANY, mine)
                    # Let any match write that read the value before ours land first:
                    # if it overwrites ours without expecting it, the read-back shows it.
                    time.sleep(0.002)
                    out.append(("any", mine, transport.read_ref(name)))
            finally:
                event.set()
            return out
        seq = 0
        while not event.is_set() and time.monotonic() < deadline + NO_PROGRESS:
            current = transport.read_ref(name)
            assert current is not None
            seq += 1
            mine = value(f"{ns}/inc/{worker}/{seq}")
            with contextlib.suppress(RefConflict):
                transport.update_ref(name, RefWriteCondition.match(current), mine)
                out.append(("match", current, mine))
    return out


Worker = Callable[[Opener, _Barrier, _Event, str, int, int], list[tuple[Any, ...]]]


def _process_main(
    result_queue: Any, fn: Worker, opener: Opener, barrier: Any, event: Any, ns: str, i: int, n: int
) -> None:
    try:
        result_queue.put((i, "ok", fn(opener, barrier, event, ns, i, n)))
    except BaseException as error:  # report everything, including assertion failures
        result_queue.put((i, "error", f"{type(error).__name__}: {error}"))
        with contextlib.suppress(Exception):
            barrier.abort()  # release the peers waiting for this worker


def run_workers(
    fn: Worker, opener: Opener, ns: str, workers: int, n: int, *, processes: bool
) -> list[list[tuple[Any, ...]]]:
    """Run ``workers`` copies of ``fn`` at once, in processes or threads; return results.

    Waits at most the start barrier plus the budget plus a stall for the reports
    (every worker stops by then unless it hangs inside one call), and names the
    workers that never reported.
    """
    limit = WAIT + BUDGET + NO_PROGRESS
    deadline = time.monotonic() + limit
    if processes:
        ctx = multiprocessing.get_context("spawn")
        results: Any = ctx.Queue()
        barrier: Any = ctx.Barrier(workers)
        event: Any = ctx.Event()
        procs = [
            ctx.Process(target=_process_main, args=(results, fn, opener, barrier, event, ns, i, n))
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        collected = []
        try:
            for _ in procs:
                collected.append(results.get(timeout=max(1.0, deadline - time.monotonic())))
        except queue.Empty:
            pass
        finally:
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
    else:
        results = queue.Queue()
        barrier = threading.Barrier(workers)
        event = threading.Event()
        threads = [
            threading.Thread(
                target=_process_main,
                args=(results, fn, opener, barrier, event, ns, i, n),
                daemon=True,  # a hung worker must not keep the test process alive
            )
            for i in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        collected = []
        while not results.empty():
            collected.append(results.get_nowait())
    silent = sorted(set(range(workers)) - {i for i, _, _ in collected})
    if silent:
        raise AssertionError(f"race workers {silent} hung: no report within {limit:.0f} s")
    errors = [f"worker {i}: {detail}" for i, status, detail in collected if status != "ok"]
    if errors:
        raise AssertionError("race workers failed:\n" + "\n".join(errors))
    return [detail for _, _, detail in sorted(collected, key=lambda item: item[0])]
