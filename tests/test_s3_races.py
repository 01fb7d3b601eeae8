"""Races across real processes on real S3 servers: the 8 x 100 CAS counter ends exact.

(The conformance suite already races 4 processes for 10 rounds, one winner each;
this is the issue's heavier counter.) The workers stop at 100 increments each or
when their time budget is spent; the verdict is that the counter equals the sum of
the increments that succeeded, however many that was.
"""

from __future__ import annotations

import uuid

import pytest

from mkit_transport import RefWriteCondition, open_transport
from mkit_transport.conformance.workers import (
    UrlOpener,
    check_counter,
    counter_value,
    counter_worker,
    run_workers,
)
from tests.support.s3_fixtures import S3Store

WORKERS, INCREMENTS = 8, 100


@pytest.mark.slow
def test_counter_of_8_processes_x_100_increments_is_exact(s3_store: S3Store) -> None:
    ns = f"refs/race/{uuid.uuid4().hex}"
    with open_transport(s3_store.url, **s3_store.options) as s3:
        s3.update_ref(f"{ns}/counter", RefWriteCondition.MISSING, counter_value(ns, 0))
        results = run_workers(
            counter_worker,
            UrlOpener(s3_store.url, s3_store.options),
            ns,
            WORKERS,
            INCREMENTS,
            processes=True,
        )
        rows = [row for worker in results for row in worker]
        check_counter(rows, s3.read_ref(f"{ns}/counter"), ns)
        assert sum(row[3] for row in rows) > 0, "the workers really contended"
