"""``python -m mkit_transport probe URL``: check that an S3 endpoint honours conditional PUTs.

Some gateways and proxies drop ``If-None-Match`` / ``If-Match`` and every
conditional write then "succeeds", which silently breaks CAS. The probe writes,
overwrites and deletes one small object under ``[prefix/]mkit-probe/`` to find out.
Credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID``... or
``AWS_PROFILE``); a secret never goes in the URL.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TextIO

from ..errors import InvalidArgument
from ..transport import Transport
from ..urls import redact_url
from .output import emit

__all__ = ["add_cli"]

#: Exit status when the endpoint ignores a condition (the CLI's generic failure).
NOT_HONOURED = 1


def _probe(args: argparse.Namespace, transport: Transport | None, out: TextIO) -> int:
    from ..transports.s3 import S3Transport  # boto3 loads only when an S3 verb runs

    if not isinstance(transport, S3Transport):
        raise InvalidArgument(
            f"probe works on mkit+s3:// and mkit+s3+http:// URLs, not {redact_url(args.url)!r}"
        )
    result = transport.probe()
    record = {
        "url": redact_url(args.url),
        "if_none_match": result.if_none_match,
        "if_match": result.if_match,
        "ok": result.ok,
        "detail": result.detail,
    }
    yes_no = {True: "honoured", False: "IGNORED"}
    verdict = "CAS is safe on this endpoint" if result.ok else "CAS is NOT safe here"
    text = (
        f"If-None-Match: {yes_no[result.if_none_match]}\n"
        f"If-Match:      {yes_no[result.if_match]}\n"
        f"{verdict} ({result.detail})"
    )
    emit(args, out, record, text)
    return 0 if result.ok else NOT_HONOURED


def add_cli(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    serve_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    """Add ``probe URL`` to the command line."""
    sub = command(
        commands,
        "probe",
        _probe,
        "check that an S3 endpoint honours If-None-Match and If-Match (exit 1 if not)",
    )
    sub.add_argument("url", help="mkit+s3://host[:port]/bucket[/prefix]")
