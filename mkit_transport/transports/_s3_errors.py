"""S3's failures in the taxonomy: the one place botocore's errors are mapped.

Private to :mod:`mkit_transport.transports.s3` (and its multipart uploads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

import botocore.exceptions as bce
from urllib3.exceptions import HTTPError as Urllib3Error

from ..errors import (
    AccessDenied,
    ConnectionFailed,
    PackNotFound,
    RefConflict,
    RemoteError,
    ServerError,
)

__all__ = ["describe", "mapped"]

_DENIED: Final = frozenset(
    {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken",
     "ExpiredToken", "AllAccessDisabled", "AccountProblem", "InvalidSecurity"}
)  # fmt: skip

_MISSING_KEY: Final = frozenset({"NoSuchKey", "NoSuchUpload", "404", "NotFound"})


def describe(what: str, status: int, code: str, text: str) -> str:
    """``what: STATUS CODE: text``, saying the status once.

    botocore names a reply without an XML body by its status (code ``"500"``, text
    the reason phrase), which would read "500 500".
    """
    label = " ".join(
        part
        for part in (str(status) if status else "", code if code != str(status) else "")
        if part
    )
    return ": ".join(part for part in (what, label, text) if part)


@contextlib.contextmanager
def mapped(what: str) -> Iterator[None]:
    """Map every boto3/botocore/urllib3 failure onto the taxonomy (the one place).

    404 on a key becomes :class:`PackNotFound` and 412 :class:`RefConflict`; the
    primitives turn those into what they mean for their verb (absent ref, CAS loss).
    """
    try:
        yield
    except bce.ClientError as error:
        info = error.response.get("Error", {})
        code = str(info.get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = describe(what, status, code, str(info.get("Message", "")))
        if status == 412 or code == "PreconditionFailed":
            raise RefConflict(message) from error
        if code in _DENIED or status in (401, 403):
            raise AccessDenied(message) from error
        if code == "NoSuchBucket":
            raise RemoteError(message) from error
        if code in _MISSING_KEY or status == 404:
            raise PackNotFound(message) from error
        if code == "ConditionalRequestConflict":
            # S3: "a conflicting operation occurred, retry". Marked transient so the
            # core ladder retries it (by code, not status); a later conflict is read back.
            raise ServerError(message, status=status, transient=True) from error
        raise ServerError(message, status=status) from error
    except (bce.NoCredentialsError, bce.PartialCredentialsError, bce.ProfileNotFound) as error:
        raise AccessDenied(f"{what}: {error}") from error
    except (bce.ConnectionError, bce.HTTPClientError, bce.IncompleteReadError) as error:
        raise ConnectionFailed(f"{what}: {error}") from error
    except Urllib3Error as error:  # a body read that broke below botocore
        raise ConnectionFailed(f"{what}: {error}") from error
    except bce.BotoCoreError as error:
        raise RemoteError(f"{what}: {error}") from error
