"""``serve http`` behind a real nginx (issue 15, items 8 and 9; HTTP-26, HTTP-27, HTTP-29).

* Downloads carry their ``Content-Length``, so a body cut behind a proxy that speaks
  HTTP/1.0 upstream (nginx's default: no chunked framing survives, a killed worker
  looks like a clean end) is a short body: the client resumes it with a range
  request instead of reporting a corrupt pack.
* A 413 from the proxy (nginx's 1 MiB default body limit) says it came from a proxy
  and names the setting.
* The README's reverse-proxy config (examples/nginx.conf) is the one run here.
"""

from __future__ import annotations

import os
import uuid

import pytest
import requests

from mkit_transport import Hash, PackKey, RefWriteCondition, open_transport
from mkit_transport.errors import PayloadTooLarge
from mkit_transport.retry import RetryPolicy
from testbed.http_server import HttpServer
from testbed.nginx import Nginx
from tests.support.nginx_fixtures import DefaultsProxy

MIB = 1 << 20


def _project() -> str:
    return f"nginx-{uuid.uuid4().hex[:12]}"


def _stored(server: HttpServer, project: str, size: int) -> tuple[bytes, PackKey]:
    data = os.urandom(size)
    key = PackKey.of(data)
    with open_transport(server.url(project)) as direct:
        direct.upload_pack(data, key)
    return data, key


def test_downloads_carry_their_length(http_server: HttpServer) -> None:
    project = _project()
    data, key = _stored(http_server, project, 3 * MIB + 17)
    url = f"{http_server.base}/{project}/packs/{key.hex()}"
    whole = requests.get(url, timeout=60)
    assert whole.status_code == 200
    assert whole.headers["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in whole.headers
    assert whole.content == data
    tail = requests.get(url, headers={"Range": "bytes=1000-"}, timeout=60)
    assert tail.status_code == 206
    assert tail.headers["Content-Length"] == str(len(data) - 1000)
    assert tail.content == data[1000:]


def test_a_cut_download_behind_an_http10_proxy_resumes(
    nginx_faults: DefaultsProxy, http_server: HttpServer
) -> None:
    project = _project()
    data, key = _stored(http_server, project, 3 * MIB)
    # The upstream connection (nginx -> server, HTTP/1.0) is closed cleanly mid-body.
    nginx_faults.faults.set_fault("close", after_bytes=MIB + 12345, direction="down", count=1)
    sleeps: list[float] = []
    url = nginx_faults.nginx.url(project)
    with open_transport(url, retry=RetryPolicy(sleep=sleeps.append), timeout=60) as client:
        assert b"".join(client.download_pack_stream(key)) == data
    assert sleeps == [1]  # one connection failure, one resume
    assert "upstream prematurely closed" in nginx_faults.nginx.error_log()


def test_a_413_from_the_proxy_names_the_proxy(nginx_faults: DefaultsProxy) -> None:
    data = os.urandom(2 * MIB)  # over nginx's default client_max_body_size (1 MiB)
    key = PackKey.of(data)
    with open_transport(nginx_faults.nginx.url(_project()), timeout=60) as client:
        with pytest.raises(PayloadTooLarge) as raised:
            client.upload_pack_stream(key, [data], len(data))
        assert not client.pack_exists(key)
    message = str(raised.value)
    assert "HTTP 413" in message
    assert "proxy" in message
    assert "nginx" in message
    assert "client_max_body_size" in message


def test_the_documented_config_streams_big_packs_and_cas(
    nginx_documented: Nginx, http_server: HttpServer
) -> None:
    project = _project()
    data = os.urandom(24 * MIB)  # far over nginx's 1 MiB default
    key = PackKey.of(data)
    chunks = [data[i : i + MIB] for i in range(0, len(data), MIB)]
    with open_transport(nginx_documented.url(project), timeout=60) as client:
        client.upload_pack_stream(key, chunks, len(data))
        assert b"".join(client.download_pack_stream(key)) == data
        value = Hash(bytes(key))
        client.update_ref("refs/heads/main", RefWriteCondition.MISSING, value)
        assert client.read_ref("refs/heads/main") == value
    with open_transport(http_server.url(project)) as direct:  # it reached the server
        assert direct.read_ref("refs/heads/main") == value
