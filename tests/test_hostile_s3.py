"""A failing or terse S3 server: the probe cleans up reliably, messages say the status once.

The probe's cleanup ``DELETE`` is retried like any idempotent step and its failure is
raised, never swallowed (a swallowed one left 36 probe objects in one bucket). A
reply without an XML body is named by its status once, not "500 500"
(spec/SPEC-THREATS.md). Faults are answers botocore itself parses: a ``before-send``
hook replies in place of the real moto server, which serves everything else.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from mkit_transport import RetryPolicy, ServerError, open_transport
from mkit_transport.transports.s3 import S3Transport
from testbed.s3_servers import BUCKET, S3Server


class _Empty:
    """A raw body with nothing in it (what a bare 5xx from a proxy looks like)."""

    def stream(self, **_: object) -> Iterator[bytes]:
        yield b""


class _FailDeletes:
    """Answer the next ``count`` unconditional DeleteObject calls with a bare ``status``."""

    def __init__(self, count: int, status: int = 503) -> None:
        self.count = count
        self.status = status
        self.answered = 0

    def __call__(self, request: Any, **_: object) -> AWSResponse | None:
        if request.method != "DELETE" or "If-Match" in request.headers or self.count <= 0:
            return None
        self.count -= 1
        self.answered += 1
        return AWSResponse(request.url, self.status, HTTPHeaders(), _Empty())


def _hook(s3: S3Transport, event: str, handler: Callable[..., AWSResponse | None]) -> None:
    """Register a ``before-send`` handler: a response it returns is the answer.

    (botocore's stubs type handlers as returning None; before-send uses the value.)
    """
    events: Any = s3.client.meta.events
    events.register(event, handler)


@pytest.fixture
def transport(moto_server: S3Server) -> Iterator[tuple[S3Transport, str]]:
    prefix = f"hostile-{uuid.uuid4().hex[:12]}"
    url = f"mkit+s3+http://127.0.0.1:{moto_server.port}/{BUCKET}/{prefix}"
    retry = RetryPolicy(retries=3, sleep=lambda _seconds: None)
    with open_transport(url, retry=retry, access_key_id="k", secret_access_key="s") as t:
        assert isinstance(t, S3Transport)
        yield t, prefix


def _probe_objects(moto_server: S3Server, prefix: str) -> list[str]:
    listing = moto_server.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/mkit-probe/")
    return [item["Key"] for item in listing.get("Contents", [])]


def test_a_failing_cleanup_delete_is_retried(
    transport: tuple[S3Transport, str], moto_server: S3Server
) -> None:
    s3, prefix = transport
    faults = _FailDeletes(count=2)
    _hook(s3, "before-send.s3.DeleteObject", faults)
    verdict = s3.probe()
    assert verdict.ok, verdict.detail
    assert faults.answered == 2  # both failures were met, and retried past
    assert _probe_objects(moto_server, prefix) == []


def test_a_cleanup_that_keeps_failing_is_raised_naming_the_object(
    transport: tuple[S3Transport, str], moto_server: S3Server
) -> None:
    s3, prefix = transport
    _hook(s3, "before-send.s3.DeleteObject", _FailDeletes(count=100))
    with pytest.raises(ServerError) as failed:
        s3.probe()
    message = str(failed.value)
    left = _probe_objects(moto_server, prefix)
    assert len(left) == 1 and left[0] in message and "left behind" in message
    assert "503: Service Unavailable" in message and "503 503" not in message
    moto_server.client().delete_object(Bucket=BUCKET, Key=left[0])


@pytest.mark.parametrize("status", [500, 503, 501])
def test_a_bare_error_says_its_status_once(transport: tuple[S3Transport, str], status: int) -> None:
    s3, _prefix = transport
    _hook(
        s3,
        "before-send.s3.GetObject",
        lambda request, **_: AWSResponse(request.url, status, HTTPHeaders(), _Empty()),
    )
    with pytest.raises(ServerError) as failed:
        s3.read_ref("refs/heads/main")
    message = str(failed.value)
    assert f"{status} {status}" not in message
    assert message.count(str(status)) == 1, message
