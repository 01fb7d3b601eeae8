"""nginx in front of the http server (loaded by tests/conftest.py).

Two session-wide proxies, both real ``nginx`` processes (testbed/nginx.py):

* ``nginx_documented`` runs the README's config, ``examples/nginx.conf``, with its
  addresses pointed at the ``http_server`` fixture, so the documented config is the
  tested one;
* ``nginx_defaults`` is a bare ``proxy_pass`` (nginx's defaults: HTTP/1.0 upstream,
  1 MiB body limit) in front of a fault proxy in front of ``http_server``, so a test
  can cut the upstream connection mid-body.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.http_server import HttpServer
from testbed.nginx import Nginx, defaults_site, running_nginx
from tests.support.faultproxy import FaultProxy

#: The README's reverse-proxy config.
DOCUMENTED_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "nginx.conf"
_DOC_UPSTREAM = "server 127.0.0.1:8080;"
_DOC_LISTEN = "listen 127.0.0.1:8081;"


def documented_site(upstream_port: int) -> str:
    """``examples/nginx.conf`` aimed at ``upstream_port``, a function of the listen port."""
    text = DOCUMENTED_CONFIG.read_text()
    assert text.count(_DOC_UPSTREAM) == 1 and text.count(_DOC_LISTEN) == 1, "config changed"
    return text.replace(_DOC_UPSTREAM, f"server 127.0.0.1:{upstream_port};")


@dataclass
class DefaultsProxy:
    """nginx with its defaults, and the fault proxy between it and the server."""

    nginx: Nginx
    faults: FaultProxy


@pytest.fixture(scope="session")
def nginx_documented(
    http_server: HttpServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Nginx]:
    """The documented config in front of ``http_server``."""
    site = documented_site(http_server.port)
    with running_nginx(
        tmp_path_factory.mktemp("nginx-doc"),
        lambda port: site.replace(_DOC_LISTEN, f"listen 127.0.0.1:{port};"),
    ) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def nginx_defaults(
    http_server: HttpServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DefaultsProxy]:
    """nginx's defaults in front of a fault proxy in front of ``http_server``."""
    with FaultProxy("127.0.0.1", http_server.port) as faults:
        upstream = f"127.0.0.1:{faults.port}"
        with running_nginx(
            tmp_path_factory.mktemp("nginx-defaults"), lambda port: defaults_site(port, upstream)
        ) as proxy:
            yield DefaultsProxy(proxy, faults)


@pytest.fixture
def nginx_faults(nginx_defaults: DefaultsProxy) -> Iterator[DefaultsProxy]:
    """The defaults proxy with no fault planned before and after the test."""
    nginx_defaults.faults.set_fault("pass")
    yield nginx_defaults
    nginx_defaults.faults.set_fault("pass")
