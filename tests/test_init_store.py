"""Creating a store (``init_store``, ``python -m mkit_transport init``) on the real servers.

Each transport starts from a place where no store is: init creates it, a second init
finds it and changes nothing, and the store then works. Over SSH only ``init``
creates a store: every other request on a missing one fails and creates nothing.
Also ``serve ssh --backend URL``: an SSH server in front of S3 (moto), through sshd.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from mkit_transport import (
    AccessDenied,
    FileTransport,
    Hash,
    PackKey,
    RemoteError,
    Transport,
    open_transport,
)
from mkit_transport.cli.main import main
from mkit_transport.cli.output import EXIT_CODES
from mkit_transport.cli.serve_ssh import resolve_backend_store
from mkit_transport.protocol.ssh import VERSION, FrameReader, encode_frame
from mkit_transport.server.ssh import EXIT_OK, serve
from mkit_transport.sync import pull, push
from mkit_transport.transports.s3 import S3Transport
from testbed.http_server import READ_TOKEN, WRITE_TOKEN, HttpServer
from testbed.s3_servers import BUCKET, S3Server
from testbed.ssh_server import KEYGEN, SshServer
from tests.support.sync_fixtures import describe, write_tree


@dataclass
class Place:
    """Where a store is not yet: its URL, options, and how to see it from outside."""

    url: str
    options: dict[str, object]
    exists: Callable[[], bool] | None  # None: nothing outside the process to look at


@pytest.fixture(
    params=[
        "memory",
        "file",
        pytest.param("http", marks=pytest.mark.server),
        pytest.param("ssh", marks=pytest.mark.server),
    ]
)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    name = f"init-{uuid.uuid4().hex[:12]}"
    if request.param == "memory":
        return Place(f"mkit+memory://{name}", {}, None)
    if request.param == "file":
        root = tmp_path / name
        return Place(f"mkit+file://{root}", {}, root.is_dir)
    if request.param == "http":
        server: HttpServer = request.getfixturevalue("http_server")
        return Place(server.url(name), {}, (server.root / name).is_dir)
    sshd: SshServer = request.getfixturevalue("sshd")
    root = sshd.stores / name
    return Place(sshd.url(root), sshd.options(), root.is_dir)


def test_init_creates_then_finds_the_store(place: Place) -> None:
    data = os.urandom(3000)
    key = PackKey.of(data)
    if place.exists is not None:
        assert not place.exists()
    with open_transport(place.url, **place.options) as transport:
        assert transport.init_store() is True
        if place.exists is not None:
            assert place.exists()
        assert transport.init_store() is False
        assert transport.list_refs() == []
        transport.upload_pack(data, key)
        transport.write_ref("refs/heads/main", Hash.of(b"main"))
    with open_transport(place.url, **place.options) as again:
        assert again.init_store() is False
        assert again.download_pack(key) == data
        assert again.pack_size(key) == len(data)
        assert again.read_ref("refs/heads/main") == Hash.of(b"main")


def test_file_init_makes_the_layout_and_leaves_a_directory_alone(tmp_path: Path) -> None:
    created = FileTransport(tmp_path / "new" / "store")
    assert created.init_store() is True
    assert sorted(os.listdir(tmp_path / "new" / "store")) == ["packs", "refs"]
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "note").write_text("mine")
    assert FileTransport(existing).init_store() is False
    assert os.listdir(existing) == ["note"], "an existing directory is left as it is"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(RemoteError):
        FileTransport(tmp_path / "a-file").init_store()
    assert (tmp_path / "a-file").read_text() == "x"


def test_http_init_answers_201_then_200_and_needs_the_write_token(
    http_token_server: HttpServer,
) -> None:
    name = f"init-{uuid.uuid4().hex[:12]}"
    url = f"{http_token_server.base}/{name}/init"

    def post(token: str | None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(url, headers=headers, timeout=10)

    assert post(None).status_code == 401
    assert post(READ_TOKEN).status_code == 403
    assert not (http_token_server.root / name).exists()
    first = post(WRITE_TOKEN)
    assert (first.status_code, first.json()) == (201, {"project": name, "created": True})
    assert (http_token_server.root / name / "packs").is_dir()
    second = post(WRITE_TOKEN)
    assert (second.status_code, second.json()["created"]) == (200, False)
    wrong = requests.get(url, headers={"Authorization": f"Bearer {WRITE_TOKEN}"}, timeout=10)
    assert wrong.status_code == 405
    with open_transport(http_token_server.url(name), token=WRITE_TOKEN) as transport:
        assert transport.init_store() is False


def _ssh(sshd: SshServer, url: str, **extra: object) -> Transport:
    return open_transport(url, **{**sshd.options(), "retries": 0, **extra})


def test_ssh_requests_on_a_missing_store_fail_and_create_nothing(sshd: SshServer) -> None:
    root = sshd.stores / f"typo-{uuid.uuid4().hex[:12]}"
    data = os.urandom(2000)
    key = PackKey.of(data)
    attempts: list[Callable[[Transport], object]] = [
        lambda t: t.read_ref("refs/heads/x"),
        lambda t: t.write_ref("refs/heads/x", Hash.of(b"x")),
        lambda t: t.upload_pack(data, key),
        lambda t: t.upload_pack_stream(key, [data[:900], data[900:]], len(data)),
        lambda t: t.pack_exists(key),
        lambda t: t.download_pack(key),
        lambda t: t.list_refs(),
    ]
    with _ssh(sshd, sshd.url(root)) as transport:
        for attempt in attempts:
            with pytest.raises(RemoteError, match="no store"):
                attempt(transport)
        assert not root.exists()
        assert transport.init_store() is True
        assert root.is_dir()
        # Pooled channels that saw the store missing serve it now.
        for _ in range(3):
            transport.write_ref("refs/heads/x", Hash.of(b"x"))
        transport.upload_pack(data, key)
    assert FileTransport(root).read_ref("refs/heads/x") == Hash.of(b"x")
    assert FileTransport(root).download_pack(key) == data


def _frame(op: str, payload: bytes = b"", **fields: object) -> bytes:
    return b"".join(encode_frame(op, payload, **fields))


def test_ssh_init_frame_in_process(tmp_path: Path) -> None:
    root = tmp_path / "store"
    data = b"pack bytes"
    key = PackKey.of(data).hex()
    session = b"".join(
        [
            _frame("hello", version=VERSION, client="test"),
            _frame("read-ref", name="refs/heads/x"),
            _frame("put", key=key, total=len(data)),
            _frame("chunk", data, offset=0, last=False),
            _frame("chunk", offset=len(data), last=True),
            _frame("init"),
            _frame("read-ref", name="refs/heads/x"),
            _frame("init"),
        ]
    )
    out = io.BytesIO()
    assert serve(str(root), io.BytesIO(session), out) == EXIT_OK
    reader = FrameReader(io.BytesIO(out.getvalue()).read)
    frames = []
    while (frame := reader.read()) is not None:
        frames.append(frame)
    answers = [(f.op, f.fields.get("code", f.fields.get("created"))) for f in frames]
    assert answers == [
        ("hello", None),
        ("error", "remote"),  # read-ref on a missing store
        ("error", "remote"),  # the refused upload, drained: still in step
        ("store", True),
        ("ref", None),
        ("store", False),
    ]
    assert sorted(os.listdir(root)) == ["packs", "refs"], "no pack from the refused upload"


@pytest.mark.parametrize("path", ["ok", "../escape", "/etc/mkit-init-escape"])
def test_ssh_forced_init_stays_inside_the_root(sshd: SshServer, path: str) -> None:
    name = f"team-{uuid.uuid4().hex[:8]}/repo"
    url = f"mkit+ssh://{sshd.user}@{sshd.host}:{sshd.port}:{name}"
    extra: dict[str, object] = {"identity_file": sshd.forced_key}
    if path != "ok":  # a valid URL; a hostile client asks for another path in its command
        extra["remote_command"] = f"echo {{path}} ; serve ssh {path}"
    with _ssh(sshd, url, **extra) as transport:
        if path == "ok":
            assert transport.init_store() is True
            assert (sshd.stores / name).is_dir()
            assert transport.init_store() is False
            return
        with pytest.raises(AccessDenied, match="inside the served root"):
            transport.init_store()
    assert not (sshd.stores.parent / "escape").exists()
    assert not Path("/etc/mkit-init-escape").exists()
    assert not (sshd.stores / name).exists()


def test_cli_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"mkit+file://{tmp_path / 'cli-store'}"
    out = io.StringIO()
    assert main(["init", url, "--json"], out=out) == 0
    assert json.loads(out.getvalue()) == {"url": url, "created": True}
    out = io.StringIO()
    assert main(["init", url, "--json"], out=out) == 0
    assert json.loads(out.getvalue()) == {"url": url, "created": False}
    out = io.StringIO()
    assert main(["init", url], out=out) == 0
    assert out.getvalue() == f"a store is already at {url}\n"
    (tmp_path / "a-file").write_text("x")
    assert main(["init", f"mkit+file://{tmp_path / 'a-file'}"], out=io.StringIO()) == 12
    err = capsys.readouterr().err
    assert err.startswith("mkit_transport: RemoteError: ") and err.count("\n") == 1


def test_cli_init_over_ssh(sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("identity_file", "known_hosts_file", "remote_command"):
        monkeypatch.setenv(f"MKIT_SSH_{name.upper()}", str(sshd.options()[name]))
    monkeypatch.setenv("MKIT_SSH_CONFIG_FILE", os.devnull)
    root = sshd.stores / f"cli-init-{uuid.uuid4().hex[:8]}"
    out = io.StringIO()
    assert main(["init", sshd.url(root)], out=out) == 0
    assert out.getvalue() == f"created an empty store at {sshd.url(root)}\n"
    assert root.is_dir()


# -- serve ssh --backend URL ------------------------------------------------------------


_TEAM_R = "mkit+s3://h/b/p/team/r?probe=false"


@pytest.mark.parametrize(
    ("path", "environ", "expected"),
    [
        ("team/repo", {}, "mkit+s3://h/b/p/team/repo?probe=false"),
        ("/team/repo", {}, "mkit+s3://h/b/p/team/repo?probe=false"),
        (None, {"SSH_ORIGINAL_COMMAND": "python3 -m mkit_transport serve ssh team/r"}, _TEAM_R),
        ("../up", {}, None),
        ("a/../b", {}, None),
        (None, {}, None),
        (None, {"SSH_ORIGINAL_COMMAND": "rm -rf /"}, None),
    ],
)
def test_serve_ssh_backend_paths(
    path: str | None, environ: dict[str, str], expected: str | None
) -> None:
    url, refusal = resolve_backend_store("mkit+s3://h/b/p/?probe=false", path, environ)
    if expected is None:
        assert isinstance(refusal, AccessDenied)
    else:
        assert (url, refusal) == (expected, None)


def test_serve_ssh_backend_bad_url_fails_before_serving() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "serve", "ssh", "--backend", "mkit+nope://x", "p"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    # A bad URL is InvalidRef (InvalidArgument once URL errors move there).
    codes = {EXIT_CODES[n] for n in ("InvalidRef", "InvalidArgument") if n in EXIT_CODES}
    assert done.returncode in codes
    assert done.stdout == b"", "nothing on the wire: no hello"
    assert done.stderr.decode().startswith("mkit_transport: Invalid")
    assert done.stderr.count(b"\n") == 1


@pytest.fixture
def s3_behind_sshd(sshd: SshServer, moto_server: S3Server) -> Iterator[tuple[str, str]]:
    """A remote command serving stores under a fresh prefix of moto's bucket."""
    prefix = f"ssh-{uuid.uuid4().hex[:12]}"
    backend = f"mkit+s3+http://127.0.0.1:{moto_server.port}/{BUCKET}/{prefix}"
    command = (
        f"env AWS_ACCESS_KEY_ID={moto_server.access_key} "
        f"AWS_SECRET_ACCESS_KEY={moto_server.secret_key} "
        f"{sys.executable} -m mkit_transport serve ssh --backend {backend}"
    )
    yield command, prefix


def test_serve_ssh_backend_s3_through_sshd(
    sshd: SshServer, moto_server: S3Server, s3_behind_sshd: tuple[str, str], tmp_path: Path
) -> None:
    command, prefix = s3_behind_sshd
    url = f"mkit+ssh://{sshd.user}@{sshd.host}:{sshd.port}:team/repo"
    source = write_tree(tmp_path / "src", seed=7, files=30)
    big = os.urandom(3 << 20)  # several SSH chunks, so the size header matters
    with _ssh(sshd, url, remote_command=command) as transport:
        report = push(source, transport, "refs/heads/main")
        pull(transport, "refs/heads/main", tmp_path / "out", cache_dir=str(tmp_path / "cache"))
        transport.upload_pack(big, PackKey.of(big))
        assert transport.download_pack(PackKey.of(big)) == big
        assert b"".join(transport.download_pack_stream(PackKey.of(big))) == big
    assert describe(tmp_path / "out") == describe(source)
    # The bytes live in the bucket, under the prefix with the client's path appended.
    direct = S3Transport(
        moto_server.endpoint,
        BUCKET,
        f"{prefix}/team/repo",
        access_key_id=moto_server.access_key,
        secret_access_key=moto_server.secret_key,
    )
    with direct:
        assert direct.read_ref("refs/heads/main") == report.new
        assert direct.pack_size(PackKey.of(big)) == len(big)


def test_serve_ssh_backend_creates_a_bucket_only_on_init(
    sshd: SshServer, moto_server: S3Server
) -> None:
    bucket = f"mkit-ssh-init-{uuid.uuid4().hex[:12]}"
    backend = f"mkit+s3+http://127.0.0.1:{moto_server.port}/{bucket}"
    command = (
        f"env AWS_ACCESS_KEY_ID={moto_server.access_key} "
        f"AWS_SECRET_ACCESS_KEY={moto_server.secret_key} "
        f"{sys.executable} -m mkit_transport serve ssh --backend {backend}"
    )
    url = f"mkit+ssh://{sshd.user}@{sshd.host}:{sshd.port}:store"
    with _ssh(sshd, url, remote_command=command) as transport:
        with pytest.raises(RemoteError, match="NoSuchBucket"):
            transport.write_ref("refs/heads/x", Hash.of(b"x"))
        assert transport.init_store() is True
        assert transport.init_store() is False
        transport.write_ref("refs/heads/x", Hash.of(b"x"))
        assert transport.read_ref("refs/heads/x") == Hash.of(b"x")


def test_serve_ssh_backend_as_a_forced_command(
    sshd: SshServer, s3_behind_sshd: tuple[str, str], tmp_path: Path
) -> None:
    """A key pinned to ``serve ssh --backend URL``: the client's path picks the store."""
    command, _ = s3_behind_sshd
    key = tmp_path / "backend_ed25519"
    subprocess.run([KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = (tmp_path / "backend_ed25519.pub").read_text().strip()
    with open(sshd.directory / "authorized_keys", "a") as keys:  # re-read at each login
        keys.write(f'restrict,command="{command}" {public} mkit-test-backend\n')
    source = write_tree(tmp_path / "src", seed=3, files=10)
    stores = {}
    for name in ("team/one", "team/two"):
        url = f"mkit+ssh://{sshd.user}@{sshd.host}:{sshd.port}:{name}"
        with _ssh(sshd, url, identity_file=str(key)) as transport:
            if name == "team/one":
                push(source, transport, "refs/heads/main")
                pull(transport, "refs/heads/main", tmp_path / "out", cache_dir=str(tmp_path / "c"))
            stores[name] = transport.read_ref("refs/heads/main")
    assert describe(tmp_path / "out") == describe(source)
    assert stores["team/one"] is not None and stores["team/two"] is None, "one store per path"
    hostile = f"mkit+ssh://{sshd.user}@{sshd.host}:{sshd.port}:team/one"
    options = {"identity_file": str(key), "remote_command": "echo {path} ; serve ssh ../up"}
    with (
        _ssh(sshd, hostile, **options) as transport,
        pytest.raises(AccessDenied, match="not a store path"),
    ):
        transport.read_ref("refs/heads/main")
