"""The wheel, as a newcomer gets it: built from the repository, installed in clean venvs.

One wheel is built from a copy of the tracked files, then installed twice, outside the
checkout: with ``[all]`` (every verb runs, the HTTP server serves, the shipped
conformance suite runs from ``site-packages``) and with no extra (the client verbs run;
the server and the suite print the one-line hint naming their extra and exit 2). Every
command runs with its working directory outside the checkout and a clean environment,
so nothing can be imported from the source tree by accident. Each subprocess has a
deadline; pip installs from its warm cache.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest
import requests

from mkit_transport import PackKey
from mkit_transport._version import __version__
from mkit_transport.pack import CODEC_RAW
from mkit_transport.protocol.ssh import VERSION, FrameReader, encode_frame
from testbed.ports import free_port
from testbed.s3_servers import BUCKET, S3Server
from tests.support.pack_fixtures import one_entry_pack

#: server: `serve http` runs gunicorn, the probe needs moto. The module's first test also
#: pays for the build and both installs (about a minute here), hence its own timeout.
pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
REF = "refs/heads/main"
#: Deadlines (seconds): building the wheel, one `pip install`, any other command.
BUILD, INSTALL, COMMAND = 300, 600, 120


def _env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that points back at the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.pop("MKIT_API_TOKEN", None)
    return {**env, **extra}


def _check(command: list[str], cwd: Path, timeout: float) -> None:
    done = subprocess.run(
        command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"


@dataclass(frozen=True)
class Venv:
    """A virtual environment with the wheel installed, and a directory to run in."""

    path: Path
    work: Path

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def run(
        self, *argv: str, input: bytes | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """``python -m mkit_transport ARGV`` in the work directory, with a deadline."""
        return subprocess.run(
            [self.python, "-m", "mkit_transport", *argv],
            cwd=self.work,
            env=_env(**(env or {})),
            input=input,
            capture_output=True,
            timeout=COMMAND,
        )

    def ok(self, *argv: str, env: dict[str, str] | None = None) -> str:
        """Run a verb that must succeed; return its stdout."""
        done = self.run(*argv, env=env)
        assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stderr.decode()}"
        return done.stdout.decode()


@dataclass(frozen=True)
class Install:
    wheel: Path
    full: Venv
    plain: Venv


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """Build the wheel from a copy of the tracked files; install it in two fresh venvs."""
    base = tmp_path_factory.mktemp("wheel")
    source, dist = base / "source", base / "dist"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        timeout=COMMAND,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():  # a file deleted but not yet staged is skipped
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    # The venvs have no pip of their own (ensurepip is slow): this interpreter's pip
    # installs into them (--python). --no-compile: modules compile when first imported.
    pip = [sys.executable, "-m", "pip"]

    def make(name: str, extras: str) -> Venv:
        venv, work = base / name, base / f"{name}-work"
        work.mkdir()
        _check([sys.executable, "-m", "venv", "--without-pip", str(venv)], base, COMMAND)
        wheel = built.result()
        install = ["install", "-q", "--no-compile", f"{wheel}{extras}"]
        _check([*pip, "--python", str(venv / "bin" / "python"), *install], base, INSTALL)
        return Venv(venv, work)

    def build() -> Path:
        _check([*pip, "wheel", "-q", "--no-deps", "-w", str(dist), str(source)], base, BUILD)
        (wheel,) = dist.glob("*.whl")
        return wheel

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        built = pool.submit(build)
        full = pool.submit(make, "all", "[all]")
        plain = pool.submit(make, "plain", "")
        return Install(built.result(), full.result(), plain.result())


def test_the_wheel_ships_the_package_data_the_suite_and_the_version(install: Install) -> None:
    names = set(zipfile.ZipFile(install.wheel).namelist())
    for shipped in (
        "mkit_transport/py.typed",
        "mkit_transport/conformance/pytest.ini",
        "mkit_transport/conformance/plugin.py",
        "mkit_transport/conformance/test_url.py",
        "mkit_transport/conformance/runner.py",
    ):
        assert shipped in names, shipped
    assert not [n for n in names if n.startswith(("tests/", "conformance/", "bench/"))]
    # One compiled module (the stat cache's lstat check, SYNC-60): a wheel per platform.
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert install.wheel.name.startswith(f"mkit_transport-{__version__}-{tag}-{tag}-"), (
        install.wheel
    )
    assert [n for n in names if n.startswith("mkit_transport/sync/_lstat.") and n.endswith(".so")]
    assert "mkit_transport/sync/_lstat.pyi" in names
    info = f"mkit_transport-{__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(install.wheel).read(f"{info}/METADATA").decode()
    assert f"\nVersion: {__version__}\n" in metadata
    assert "\nLicense-Expression: Apache-2.0\n" in metadata
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.MULTILINE))
    assert {"server", "conformance", "all"} <= extras
    entry_points = zipfile.ZipFile(install.wheel).read(f"{info}/entry_points.txt").decode()
    assert "[pytest11]\nmkit_transport.conformance.plugin = mkit_transport.conformance.plugin" in (
        entry_points
    ), entry_points


@pytest.mark.parametrize("which", ["full", "plain"])
def test_it_runs_from_site_packages(install: Install, which: str) -> None:
    venv: Venv = getattr(install, which)
    code = "import mkit_transport as m; print(m.__file__)"
    where = subprocess.run(
        [venv.python, "-c", code],
        cwd=venv.work,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND,
        check=True,
    ).stdout
    assert where.startswith(str(venv.path / "lib")), where
    assert venv.ok("--version") == f"mkit_transport {__version__}\n"
    script = subprocess.run(
        [str(venv.path / "bin" / "mkit-transport"), "--version"],
        cwd=venv.work,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND,
    )
    assert script.stdout == f"mkit_transport {__version__}\n"


def test_every_transport_and_server_imports_on_a_plain_install(install: Install) -> None:
    # requests, boto3 and paramiko are base dependencies: no extra for any client.
    modules = [f"mkit_transport.transports.{name}" for name in ("http", "s3", "ssh")]
    modules += ["mkit_transport.server.http", "mkit_transport.server.ssh"]
    # The installed package runs the compiled lstat check, not its Python twin.
    check = "from mkit_transport.sync.lstatcheck import ACCELERATED\nassert ACCELERATED\n"
    subprocess.run(
        [install.plain.python, "-c", "".join(f"import {m}\n" for m in modules) + check],
        cwd=install.plain.work,
        env=_env(),
        timeout=COMMAND,
        check=True,
    )


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.txt").write_text("beta\n")
    return root


@pytest.mark.parametrize("which", ["full", "plain"])
def test_store_and_sync_verbs(install: Install, which: str) -> None:
    venv: Venv = getattr(install, which)
    work = venv.work / "verbs"
    url, copy = f"mkit+file://{work}/store", f"mkit+file://{work}/copy"
    value = "ab" * 32
    assert venv.ok("refs", "write", url, "refs/tags/v1", value, "--missing") == (
        f"refs/tags/v1 -> {value}\n"
    )
    assert venv.ok("refs", "read", url, "refs/tags/v1") == value + "\n"
    assert venv.ok("refs", "list", url, "--prefix", "refs/tags") == f"{value}  v1\n"

    raw = b"one object\n"
    pack = one_entry_pack(CODEC_RAW, blake3.blake3(raw).digest(), len(raw), raw)
    (work / "one.pack").write_bytes(pack)
    key = PackKey.of(pack).hex()
    assert venv.ok("packs", "upload", url, str(work / "one.pack")) == key + "\n"
    assert json.loads(venv.ok("packs", "exists", url, key, "--json")) == {
        "exists": True,
        "key": key,
    }
    summary = json.loads(venv.ok("packs", "verify", url, key, "--json"))
    assert (summary["entries"], summary["kinds"]["blob"]) == (1, 1)

    pushed = json.loads(venv.ok("push", str(_tree(work / "tree")), url, REF, "--json"))
    assert pushed["updated"] and pushed["files"] == 2
    history = json.loads(venv.ok("log", url, REF, "--json"))
    assert [entry["key"] for entry in history] == [pushed["new"]]
    assert "sub/b.txt" in venv.ok("show", url, REF)
    mirrored = json.loads(venv.ok("mirror", url, copy, REF, "--json"))
    assert mirrored["new"] == pushed["new"]
    venv.ok("pull", copy, REF, str(work / "out"))
    assert (work / "out" / "sub" / "b.txt").read_text() == "beta\n"


def test_probe_against_moto(install: Install, moto_server: S3Server) -> None:
    url = f"mkit+s3+http://127.0.0.1:{moto_server.port}/{BUCKET}/wheel-probe"
    credentials = {
        "AWS_ACCESS_KEY_ID": moto_server.access_key,
        "AWS_SECRET_ACCESS_KEY": moto_server.secret_key,
    }
    report = json.loads(install.plain.ok("probe", url, "--json", env=credentials))
    assert (report["if_none_match"], report["if_match"], report["ok"]) == (True, True, True)


@contextlib.contextmanager
def _serving(venv: Venv, root: Path) -> Iterator[str]:
    """``serve http`` from the venv until the block ends; yields its base URL."""
    port = free_port()
    log = venv.work / "serve-http.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                *(venv.python, "-m", "mkit_transport", "serve", "http", "--root", str(root)),
                *("--bind", f"127.0.0.1:{port}", "--workers", "1"),
            ],
            cwd=venv.work,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            assert time.monotonic() < deadline, f"not serving in 30 s:\n{log.read_text()}"
            time.sleep(0.1)
        yield f"mkit+http://127.0.0.1:{port}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_serve_http(install: Install) -> None:
    venv, root = install.full, install.full.work / "served"
    with _serving(venv, root) as base:
        tree = _tree(venv.work / "http-tree")
        pushed = json.loads(venv.ok("push", str(tree), f"{base}/demo", REF, "--json"))
        listed = venv.ok("refs", "list", f"{base}/demo")
        assert listed == f"{pushed['new']}  {REF}\n"
    assert (root / "demo" / "refs" / "heads" / "main" / ".ref").read_text().strip() == (
        pushed["new"]
    )


def _frame(op: str, **fields: object) -> bytes:
    return b"".join(encode_frame(op, b"", **fields))


@pytest.mark.parametrize("which", ["full", "plain"])
def test_serve_ssh_answers_on_stdin(install: Install, which: str) -> None:
    venv: Venv = getattr(install, which)
    store = venv.work / "ssh-store"
    store.mkdir()
    request = _frame("hello", version=VERSION, client="wheel-test")
    request += _frame("list-refs", prefix="") + _frame("bye")
    done = venv.run("serve", "ssh", str(store), input=request)
    assert done.returncode == 0, done.stderr.decode()
    reader = FrameReader(io.BytesIO(done.stdout).read)
    replies = []
    while (reply := reader.read()) is not None:
        replies.append(reply.op)
    assert replies == ["hello", "refs"]


def test_conformance_runs_the_shipped_suite(install: Install) -> None:
    store = install.full.work / "conformance-store"
    done = install.full.run(
        "conformance", f"mkit+file://{store}", "--json", "--", "-k", "empty_pack or exists"
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = json.loads(done.stdout)
    # The suite that ran is the one the wheel installed (conformance/ remapped into the package).
    assert report["suite"].startswith(f"{install.full.path}/lib/"), report["suite"]
    assert report["counts"]["failed"] == 0
    assert report["counts"]["passed"] >= 2
    assert {row["test"].split("[")[0] for row in report["tests"]} >= {"test_empty_pack"}


def test_plain_install_names_the_missing_extras(install: Install) -> None:
    plain = install.plain
    served = plain.run("serve", "http", "--root", str(plain.work / "never"))
    assert (served.returncode, served.stdout) == (2, b"")
    assert served.stderr.decode() == (
        "mkit_transport: serve http needs gunicorn: pip install 'mkit-transport[server]'\n"
    )
    suite = plain.run("conformance", f"mkit+file://{plain.work}/never")
    assert (suite.returncode, suite.stdout) == (2, b"")
    assert suite.stderr.decode() == (
        "mkit_transport: conformance needs pytest: pip install 'mkit-transport[conformance]'\n"
    )
    assert not (plain.work / "never").exists()
