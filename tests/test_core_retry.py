"""RetryPolicy: the default ladder, what is transient, jitter and Retry-After."""

from __future__ import annotations

import pytest

from mkit_transport import (
    AccessDenied,
    ConnectionFailed,
    InvalidResponse,
    MemoryTransport,
    PackKey,
    RefConflict,
    RetryPolicy,
    ServerError,
    Transport,
    is_retryable,
)
from mkit_transport.retry import RetryLadder


def _run(policy: RetryPolicy, errors: list[Exception]) -> int:
    calls = 0

    def op() -> str:
        nonlocal calls
        calls += 1
        if errors:
            raise errors.pop(0)
        return "ok"

    policy.retrying()(op)
    return calls


def test_default_ladder() -> None:
    policy = RetryPolicy()
    assert policy.ladder() == [1, 2, 4, 8, 16]
    assert (policy.retries, policy.initial, policy.multiplier, policy.max_delay) == (5, 1, 2, 300)


def test_ladder_caps_at_max_delay() -> None:
    assert RetryPolicy(retries=12).ladder()[-4:] == [256, 300, 300, 300]


def test_sleeps_are_injected_and_exact() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(sleep=sleeps.append)
    assert _run(policy, [ConnectionFailed()] * 3) == 4
    assert sleeps == [1, 2, 4]


def test_six_calls_at_most() -> None:
    sleeps: list[float] = []
    with pytest.raises(ServerError):
        _run(RetryPolicy(sleep=sleeps.append), [ServerError(status=500)] * 9)
    assert sleeps == [1, 2, 4, 8, 16]


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ConnectionFailed(), True),
        (ServerError(status=500), True),
        (ServerError(status=503), True),
        (ServerError(status=599), True),
        (ServerError(status=429), True),
        (ServerError(status=0), False),
        (ServerError(status=404), False),
        (ServerError(status=499), False),
        (ServerError(status=409), False),
        (ServerError(status=409, transient=True), True),
        (RefConflict(), False),
        (AccessDenied(), False),
        (InvalidResponse(), False),
        (ValueError(), False),
    ],
)
def test_is_retryable(error: Exception, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_no_retries() -> None:
    with pytest.raises(ConnectionFailed):
        _run(RetryPolicy(retries=0, sleep=lambda s: None), [ConnectionFailed()])


def test_a_ladder_without_retries_calls_once_and_raises_the_error_itself() -> None:
    """retries=0 (the SSH server's backend) calls ``op`` once, never via tenacity."""
    dropped: list[BaseException] = []
    slept: list[float] = []
    ladder = RetryLadder(RetryPolicy(retries=0, sleep=slept.append), before_retry=dropped.append)
    error = ConnectionFailed("cut")
    calls: list[int] = []

    def failing() -> str:
        calls.append(1)
        raise error

    with pytest.raises(ConnectionFailed) as raised:
        ladder.run(failing)
    assert raised.value is error and calls == [1] and dropped == [] and slept == []
    assert ladder.run(lambda: "ok") == "ok" and ladder.retries_used == 0


def test_jitter_stays_under_the_ladder() -> None:
    policy = RetryPolicy(jitter=True)
    for n in range(1, 6):
        assert all(0 <= policy.delay(n) <= 2 ** (n - 1) for _ in range(50))


def test_retry_after_is_opt_in_and_capped() -> None:
    busy = ServerError(status=503, retry_after=42.0)
    assert RetryPolicy().delay(1, busy) == 1
    assert RetryPolicy(honor_retry_after=True).delay(1, busy) == 42
    assert RetryPolicy(honor_retry_after=True, max_delay=10).delay(1, busy) == 10


def test_policy_is_a_frozen_value() -> None:
    policy = RetryPolicy()
    assert policy.replace(retries=2) == RetryPolicy(retries=2)
    with pytest.raises(AttributeError):
        policy.retries = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)


def test_before_retry_hook_sees_each_error() -> None:
    seen: list[BaseException] = []
    errors = [ConnectionFailed("a"), ConnectionFailed("b")]

    def op() -> None:
        if errors:
            raise errors.pop(0)

    RetryPolicy(sleep=lambda s: None).retrying(before_retry=seen.append)(op)
    assert [str(e) for e in seen] == ["a", "b"]


class _Nesting(MemoryTransport):
    """A transport whose pack upload retries a step of its own, as S3's multipart does.

    ``step`` fails the number of times ``failures`` says (``None``: always); ``peer``,
    when set, is another transport the primitive calls through its public verbs.
    """

    def __init__(self, sleeps: list[float], failures: int | None) -> None:
        super().__init__(retry=RetryPolicy(sleep=sleeps.append))
        self.failures = failures
        self.steps = 0
        self.peer: Transport | None = None

    def _step(self) -> None:
        self.steps += 1
        if self.failures is None or self.steps <= self.failures:
            raise ConnectionFailed(f"step {self.steps}")

    def _put_pack(self, key: PackKey, data: bytes) -> None:
        if self.peer is not None:
            self.peer.upload_pack(data, key)
        self._call(self._step)  # nested: the operation's ladder
        super()._put_pack(key, data)


def test_a_step_retried_inside_a_call_climbs_the_operations_ladder() -> None:
    sleeps: list[float] = []
    transport = _Nesting(sleeps, failures=None)
    with pytest.raises(ConnectionFailed, match="step 6"):
        transport.upload_pack(b"x", PackKey.of(b"x"))
    assert transport.steps == 6, "the policy's six attempts, not six per loop"
    assert sleeps == [1, 2, 4, 8, 16]


def test_loops_on_one_ladder_share_its_rungs() -> None:
    """Two retries in a first loop leave three rungs; a spent ladder allows one attempt."""
    sleeps: list[float] = []
    ladder = RetryLadder(RetryPolicy(sleep=sleeps.append))
    errors = [ConnectionFailed(), ConnectionFailed()]
    ladder.run(lambda: _raise(errors.pop(0)) if errors else None)
    assert sleeps == [1, 2]
    calls: list[int] = []

    def always() -> None:
        calls.append(1)
        raise ConnectionFailed()

    with pytest.raises(ConnectionFailed):
        ladder.run(always)
    assert (len(calls), sleeps) == (4, [1, 2, 4, 8, 16])
    with pytest.raises(ConnectionFailed):
        ladder.run(always)
    assert (len(calls), sleeps) == (5, [1, 2, 4, 8, 16])


def test_another_transport_called_inside_keeps_its_own_ladder() -> None:
    """The peer spends five rungs; the outer transport still has its own five."""
    sleeps: list[float] = []
    outer = _Nesting(sleeps, failures=1)
    outer.peer = _Nesting(sleeps, failures=5)
    outer.upload_pack(b"x", PackKey.of(b"x"))
    assert sleeps == [1, 2, 4, 8, 16, 1]
    assert outer.peer.pack_exists(PackKey.of(b"x"))


def _raise(error: Exception) -> None:
    raise error


def test_conflict_backoff_doubles_its_bound_up_to_the_cap_and_refuses_nonsense() -> None:
    import random

    from mkit_transport import ConflictBackoff, InvalidArgument

    backoff = ConflictBackoff(first=0.01, cap=0.05)
    rng = random.Random(7)
    assert backoff.delay(0, rng) == 0.0
    for streak, bound in [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.05), (60, 0.05)]:
        waits = [backoff.delay(streak, rng) for _ in range(200)]
        assert all(0.0 <= w <= bound for w in waits), (streak, max(waits))
        assert max(waits) > bound / 2, "full jitter spreads over the whole bound"
    for first, cap in [(-0.1, 1.0), (0.2, 0.1)]:
        with pytest.raises(InvalidArgument):
            ConflictBackoff(first=first, cap=cap)
