"""A transport known only through ``register_transport()`` runs the races in processes.

The scheme is registered inside the harness fixture, never at import time, so a race
worker (a ``spawn`` child, which re-imports nothing of the parent's state) can open
the URL only because the suite hands it the scheme's importable ``"module:attr"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import pytest

from mkit_transport import FileTransport, RetryPolicy, Transport, open_transport
from mkit_transport.conformance import FileBackdoor, Harness, RaceSuite
from mkit_transport.errors import InvalidArgument
from mkit_transport.urls import pop_retry, reject_options, split_url

SCHEME = "mkit+registeredfile"


class RegisteredFileTransport(FileTransport):
    """The file transport under a scheme of its own, opened through ``from_url``."""

    @classmethod
    def from_url(cls, url: str, **options: object) -> Self:
        parts = split_url(url, options)
        retry = pop_retry(options)
        reject_options(url, options)
        if not parts.path.startswith("/"):
            raise InvalidArgument(f"{url!r}: an absolute path is needed")
        return cls(parts.path, retry=retry)


class TestRegisteredTransportRaces(RaceSuite):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Harness:
        from mkit_transport import register_transport

        register_transport(SCHEME, RegisteredFileTransport)
        url = f"{SCHEME}://{tmp_path / 'store'}"

        def opener(retry: RetryPolicy | None) -> Transport:
            return open_transport(url, **({} if retry is None else {"retry": retry}))

        return Harness(
            open=opener,
            url=url,
            backdoor=FileBackdoor(tmp_path / "store"),
            fresh=True,
            race_rounds=4,
            counter_increments=10,
        )


def test_the_races_above_run_in_processes(tmp_path: Path) -> None:
    """The class registered by object is re-registered by name in a spawned child."""
    from mkit_transport import register_transport
    from mkit_transport.conformance.suite_races import _opener
    from mkit_transport.conformance.workers import (
        UrlOpener,
        counter_count,
        counter_value,
        counter_worker,
        run_workers,
    )

    register_transport(SCHEME, RegisteredFileTransport)
    url = f"{SCHEME}://{tmp_path}"
    with open_transport(url) as transport:
        harness = Harness(open=lambda retry: open_transport(url), url=url)
        assert _opener(harness, transport)[1] is True, "the suite races processes"
        transport.write_ref("refs/c/counter", counter_value("refs/c", 0))
    opener = UrlOpener(url, {}, f"{__name__}:RegisteredFileTransport")
    results = run_workers(counter_worker, opener, "refs/c", 2, 3, processes=True)
    assert sorted(row[2] for worker in results for row in worker) == [3, 3]
    with open_transport(url) as transport:
        final = transport.read_ref("refs/c/counter")
    assert final is not None and counter_count("refs/c", final) == 6
