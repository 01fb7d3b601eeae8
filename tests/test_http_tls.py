"""mkit+https end to end: a real TLS server (gunicorn) with a certificate from a test CA."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mkit_transport import (
    Hash,
    PackKey,
    RefConflict,
    RefWriteCondition,
    RemoteError,
    RetryPolicy,
    open_transport,
)
from testbed.ports import free_port
from testbed.waiting import wait_until

#: Every test here talks to the gunicorn TLS server the module starts.
pytestmark = pytest.mark.server


def _certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost / 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mkit test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real `serve http --certfile` process; yields (base URL, CA file)."""
    directory = tmp_path_factory.mktemp("tls")
    ca, cert, key = _certificate(directory)
    port = free_port()
    log = open(directory / "server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mkit_transport",
            "serve",
            "http",
            "--root",
            str(directory / "root"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--certfile",
            str(cert),
            "--keyfile",
            str(key),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError((directory / "server.log").read_text())
        return requests.get(f"https://localhost:{port}/healthz", verify=str(ca), timeout=5).ok

    try:
        try:
            wait_until(answers, 120, "https health check", ignore=(requests.RequestException,))
        except TimeoutError as error:
            raise RuntimeError(f"{error}: {(directory / 'server.log').read_text()}") from None
        yield f"mkit+https://localhost:{port}/proj", ca
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        log.close()


def test_https_round_trip_with_a_trusted_ca(tls_server: tuple[str, Path]) -> None:
    url, ca = tls_server
    with open_transport(url, verify=str(ca)) as remote:
        data = os.urandom(300_000)
        key = PackKey.of(data)
        remote.upload_pack_stream(key, [data[:1000], data[1000:]], len(data))
        assert remote.download_pack(key) == data
        remote.update_ref("refs/heads/main", RefWriteCondition.MISSING, Hash.of(b"1"))
        with pytest.raises(RefConflict):
            remote.update_ref("refs/heads/main", RefWriteCondition.MISSING, Hash.of(b"2"))
        assert [r.name for r in remote.list_refs("refs/heads")] == ["main"]


def test_an_untrusted_certificate_is_refused_and_not_retried(
    tls_server: tuple[str, Path],
) -> None:
    url, _ = tls_server
    sleeps: list[float] = []
    with (
        open_transport(url, retry=RetryPolicy(sleep=sleeps.append)) as remote,
        pytest.raises(RemoteError, match="certificate"),
    ):
        remote.read_ref("refs/heads/main")
    assert sleeps == []
