"""Secrets never leak: no token, password or secret key in a message, repr, log line or report.

Every URL below carries the marker ``S3CR3T`` where a user (or an attacker's config file)
might put a credential; every refusal quotes its URL through ``urls.redact_url``, and the
HTTP server's access log records neither the Basic-auth user nor the query string
(spec/SPEC-THREATS.md).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import requests

from mkit_transport import open_transport
from mkit_transport.cli import main
from mkit_transport.errors import TransportError
from mkit_transport.urls import redact_url
from testbed.http_server import HttpServer

SECRET = "S3CR3T"

HOSTILE_URLS = [
    # S3: keys in the user information, or in the query (refused, never quoted)
    f"mkit+s3://AKIA:{SECRET}@s3.example.com/bucket",
    f"mkit+s3+http://AKIA:{SECRET}@127.0.0.1:9/bucket",
    f"mkit+s3://s3.example.com/bucket?secret_access_key={SECRET}",
    f"mkit+s3://s3.example.com/bucket?session_token={SECRET}",
    f"mkit+s3://s3.example.com/b?bogus=1&secret_access_key={SECRET}",
    f"mkit+s3://AKIA:{SECRET}@s3.example.com/bad..bucket?x=1",
    # HTTP: a token as the user, user:password, a token in the query, odd spellings
    f"mkit+https://{SECRET}@example.com/p",
    f"mkit+https://user:{SECRET}@example.com/p?unknown=1",
    f"mkit+https://user:{SECRET}@example.com:99999/p",
    f"mkit+https://user:{SECRET}@example.com/bad%20project",
    f"mkit+http://user:{SECRET}@example.com/p",  # plaintext to a remote host
    f"MKIT+HTTPS://user:{SECRET}@example.com/p",
    f"https://user:{SECRET}@example.com/p",
    f"mkit+https://example.com/p?token={SECRET}",
    f"mkit+https://example.com/p?TOKEN={SECRET}",
    f"mkit+https://example.com/p?x={SECRET}&unknown=2",
    f"mkit+https://example.com/p?{SECRET}",
    f"mkit+https://example.com/p#{SECRET}",
    f"mkit+https://user:pa/{SECRET}@example.com/p",
    # SSH and file: a password where none is allowed
    f"mkit+ssh://git:{SECRET}@example.com/srv/store",
    f"mkit+ssh://git@{SECRET}@example.com/srv/store",
    f"mkit+ssh://git:{SECRET}@example.com/srv/store?x=1",
    f"mkit+file://user:{SECRET}@host/srv/store",
    f"mkit+file:///srv/store?bogus={SECRET}",
    f"mkit+memory://user:{SECRET}@name",
    f"mkit+nosuch://user:{SECRET}@host/x",
    f"user:{SECRET}@example.com:store",
    f"mkit+https://user:{SECRET}@exa mple.com/p",
]


def _chain(error: BaseException | None) -> str:
    """Every message and repr along an exception's cause chain."""
    shown = []
    while error is not None:
        shown += [str(error), repr(error)]
        error = error.__cause__ or error.__context__
    return "\n".join(shown)


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_a_refused_url_never_shows_its_secret(url: str) -> None:
    with pytest.raises(TransportError) as refused:
        open_transport(url).close()
    assert SECRET not in _chain(refused.value)


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_the_cli_never_shows_a_secret(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["refs", "list", url], ["refs", "list", url, "--json"], ["init", url, "--json"]):
        out = io.StringIO()
        assert main(argv, out=out) != 0
        captured = capsys.readouterr()
        assert SECRET not in out.getvalue() + captured.out + captured.err
        assert captured.err.count("\n") == 1, captured.err  # one line, no traceback


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mkit+https://u:pw@h/p?token=t&x", "mkit+https://***@h/p?token=***&***"),
        ("mkit+ssh://git@h/srv/x?timeout=3", "mkit+ssh://git@h/srv/x?timeout=***"),
        ("mkit+ssh://git:pw@h/srv/x", "mkit+ssh://***@h/srv/x"),
        ("mkit+file:///srv/store#frag", "mkit+file:///srv/store#***"),
        ("mkit+file:///srv/store", "mkit+file:///srv/store"),
        ("u:pw@h:path", "***@h:path"),
    ],
)
def test_redact_url_keeps_what_locates_and_hides_what_authenticates(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_access_log_records_no_user_and_no_query(http_server: HttpServer) -> None:
    """A token sent as Basic-auth user (``TOKEN@host``) or in a query never reaches the log."""
    marker = f"/logcheck-{time.monotonic_ns()}/refs/heads/main"
    auth = requests.get(f"{http_server.base}{marker}", auth=(SECRET, SECRET), timeout=10)
    query = requests.get(f"{http_server.base}{marker}?token={SECRET}", timeout=10)
    assert auth.status_code == query.status_code  # both answered (no ref there)
    line = f'"GET {marker} HTTP/1.1" {query.status_code}'
    deadline = time.monotonic() + 10  # the worker writes its log line after the response
    while http_server.log_text().count(line) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    log = http_server.log_text()
    assert log.count(line) == 2
    assert SECRET not in log


def test_json_reports_quote_the_url_redacted(tmp_path: Path) -> None:
    """A report copied around (``init --json``) carries no query value."""
    url = f"mkit+file://{tmp_path}/store?durable=false"
    out = io.StringIO()
    assert main(["init", url, "--json"], out=out) == 0
    assert json.loads(out.getvalue())["url"] == f"mkit+file://{tmp_path}/store?durable=***"
