"""S3 error mapping: the one place where boto3's failures become the taxonomy.

The table tests feed botocore exceptions to the mapper (unit level). The 409 tests
run against real servers with a one-shot answer injected through botocore's own
``before-send`` hook, so the retry and the read-back really happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import botocore.exceptions as bce
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from urllib3.exceptions import ProtocolError as Urllib3ProtocolError

from mkit_transport import (
    AccessDenied,
    ConnectionFailed,
    Hash,
    PackNotFound,
    RefConflict,
    RefWriteCondition,
    RemoteError,
    RetryPolicy,
    ServerError,
    open_transport,
)
from mkit_transport.errors import TransportError
from mkit_transport.retry import is_retryable
from mkit_transport.transports._s3_errors import mapped as _mapped
from mkit_transport.transports.s3 import S3Transport
from tests.support.s3_fixtures import S3Store


def _client_error(status: int, code: str) -> bce.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return bce.ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("error", "expected", "retryable"),
    [
        (_client_error(412, "PreconditionFailed"), RefConflict, False),
        (_client_error(404, "NoSuchKey"), PackNotFound, False),
        (_client_error(404, "404"), PackNotFound, False),  # HEAD has no body, no code
        (_client_error(404, "NoSuchUpload"), PackNotFound, False),
        (_client_error(404, "NoSuchBucket"), RemoteError, False),
        (_client_error(403, "AccessDenied"), AccessDenied, False),
        (_client_error(403, "SignatureDoesNotMatch"), AccessDenied, False),
        (_client_error(403, "InvalidAccessKeyId"), AccessDenied, False),
        (_client_error(401, "Unauthorized"), AccessDenied, False),
        (_client_error(409, "ConditionalRequestConflict"), ServerError, True),
        (_client_error(409, "BucketNotEmpty"), ServerError, False),
        (_client_error(400, "InvalidRequest"), ServerError, False),
        (_client_error(416, "InvalidRange"), ServerError, False),
        (_client_error(429, "TooManyRequests"), ServerError, True),
        (_client_error(500, "InternalError"), ServerError, True),
        (_client_error(503, "SlowDown"), ServerError, True),
        (bce.EndpointConnectionError(endpoint_url="http://x"), ConnectionFailed, True),
        (bce.ConnectTimeoutError(endpoint_url="http://x"), ConnectionFailed, True),
        (bce.ReadTimeoutError(endpoint_url="http://x"), ConnectionFailed, True),
        (bce.ConnectionClosedError(endpoint_url="http://x"), ConnectionFailed, True),
        (bce.ResponseStreamingError(error="cut"), ConnectionFailed, True),
        (bce.IncompleteReadError(actual_bytes=1, expected_bytes=2), ConnectionFailed, True),
        (Urllib3ProtocolError("broken"), ConnectionFailed, True),
        (bce.NoCredentialsError(), AccessDenied, False),
        (bce.PartialCredentialsError(provider="env", cred_var="x"), AccessDenied, False),
        (bce.ProfileNotFound(profile="p"), AccessDenied, False),
        (bce.ParamValidationError(report="bad"), RemoteError, False),
    ],
)
def test_error_table(error: Exception, expected: type[TransportError], retryable: bool) -> None:
    with pytest.raises(expected) as caught, _mapped("op"):
        raise error
    assert type(caught.value) is expected
    assert caught.value.__cause__ is error, "chained with raise ... from"
    assert is_retryable(caught.value) is retryable


def test_foreign_exceptions_pass_through_unmapped() -> None:
    with pytest.raises(KeyError), _mapped("op"):
        raise KeyError("a programming error is not a transport failure")


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: object) -> Iterator[bytes]:
        yield self.data


_CONFLICT_409 = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code>'
    b"<Message>A conflicting operation occurred</Message></Error>"
)


def _inject_409_once(transport: S3Transport, before: Callable[[], None] | None = None) -> list[int]:
    """Answer the next PutObject with a 409 ConditionalRequestConflict, once."""
    injected: list[int] = []

    def handler(request: Any, **_: object) -> Any:  # an AWSResponse replaces sending
        if injected:
            return None
        injected.append(1)
        if before is not None:
            before()
        return AWSResponse(request.url, 409, HTTPHeaders(), _Body(_CONFLICT_409))

    transport.client.meta.events.register("before-send.s3.PutObject", handler)
    return injected


@pytest.mark.parametrize("landed", [False, True], ids=["refused", "landed"])
def test_409_conditional_request_conflict_is_retried_then_read_back(
    s3_store: S3Store, landed: bool
) -> None:
    """409 by code is transient: retried; if the write landed after all, the read-back says so."""
    sleeps: list[float] = []
    name, value = "refs/heads/busy", Hash.of(b"busy")
    url = s3_store.url
    retry = RetryPolicy(sleep=sleeps.append)
    with open_transport(url, retry=retry, probe="false", **s3_store.options) as s3:
        assert isinstance(s3, S3Transport)
        raw = s3_store.server.client()

        def land() -> None:  # the server applied it, then answered 409
            raw.put_object(
                Bucket=s3_store.bucket,
                Key=s3_store.ref_key(name),
                Body=value.hex().encode() + b"\n",
            )

        injected = _inject_409_once(s3, land if landed else None)
        s3.update_ref(name, RefWriteCondition.MISSING, value)
        assert injected == [1]
        assert sleeps == [1]
        assert s3.read_ref(name) == value
