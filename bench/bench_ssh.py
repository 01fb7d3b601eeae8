"""SSH transport figures against a raw paramiko ``cat`` stream over the same sshd.

    .venv/bin/python bench/bench_ssh.py [--quick]

Starts a private sshd on loopback (as the tests do), then reports, in one run:

* upload and download of N MiB (256 by default) through ``upload_pack_stream`` /
  ``download_pack_stream``, as a ratio of the time a raw exec channel running
  ``cat`` takes to move the same bytes (goal >= 0.8 up, >= 0.9 down: issue 17);
* peak RSS growth for 1 GiB each way, on the client (a fresh process) and on the
  server (the remote command is this script, which serves and records its own peak);
* 8 processes x 100 read-modify-CAS increments of one ref: the final count must be
  exactly 800.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paramiko

from bench.common import MIB, Figure, Results, child_peak_rss, median_pair, mib, proc_status
from mkit_transport import (
    Hash,
    PackKey,
    RefConflict,
    RefWriteCondition,
    open_transport,
)
from mkit_transport.hashes import Hasher
from testbed.ssh_server import SshServer, running_sshd

CHUNK = MIB
REF = "refs/bench/counter"


def _chunks(total: int, seed: int = 7) -> Iterator[bytes]:
    """Deterministic, incompressible chunks without holding the whole pack."""
    block = Hash.of(seed.to_bytes(8, "big")).hex().encode() * (CHUNK // 64)
    for index in range(0, total, CHUNK):
        yield (index.to_bytes(8, "big") + block)[: min(CHUNK, total - index)]


def _key(total: int) -> PackKey:
    hasher = Hasher()
    hasher.update_all(_chunks(total))
    return hasher.pack_key()


def _options(server: SshServer, remote_command: str | None = None) -> dict[str, object]:
    options = server.options(timeout=120)
    if remote_command:
        options["remote_command"] = remote_command
    return options


def _raw_client(server: SshServer) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(server.known_hosts)
    client.connect(
        server.host,
        port=server.port,
        username=server.user,
        key_filename=server.client_key,
        allow_agent=False,
        look_for_keys=False,
    )
    return client


def _raw_upload(server: SshServer, path: Path, total: int, durable: bool = False) -> None:
    """Baseline: ``cat > file`` on an exec channel, fed the same chunks.

    With ``durable``, ``&& sync file`` (an fsync of that file), the durability the
    transport's server gives every pack.
    """
    client = _raw_client(server)
    try:
        channel = client.get_transport().open_session()  # type: ignore[union-attr]
        channel.exec_command(f"cat > {path}" + (f" && sync {path}" if durable else ""))
        for chunk in _chunks(total):
            channel.sendall(chunk)
        channel.shutdown_write()
        if channel.recv_exit_status() != 0:
            raise RuntimeError("raw cat upload failed")
    finally:
        client.close()


def _raw_download(server: SshServer, path: Path, total: int) -> None:
    client = _raw_client(server)
    try:
        channel = client.get_transport().open_session()  # type: ignore[union-attr]
        channel.exec_command(f"cat {path}")
        received = 0
        while data := channel.recv(CHUNK):
            received += len(data)
        if received != total or channel.recv_exit_status() != 0:
            raise RuntimeError(f"raw cat download got {received} of {total}")
    finally:
        client.close()


def _throughput(server: SshServer, total: int, repeat: int) -> list[Figure]:
    root = server.store("throughput")
    key = _key(total)
    raw = root / "raw.bin"
    url = server.url(root)
    options = _options(server)

    def upload() -> None:
        for leftover in root.rglob(key.hex()):
            leftover.unlink()  # a fresh upload each time, not the "already stored" path
        with open_transport(url, **options) as transport:
            transport.upload_pack_stream(key, _chunks(total), total)

    def download() -> None:
        with open_transport(url, **options) as transport:
            received = sum(len(c) for c in transport.download_pack_stream(key))
        assert received == total

    figures = []
    for verb, ours, theirs, goal in (
        ("upload vs cat", upload, lambda: _raw_upload(server, raw, total), ">= 0.8"),
        (  # the same durability: reported beside the goal's figure
            "upload vs cat+fsync",
            upload,
            lambda: _raw_upload(server, raw, total, durable=True),
            None,
        ),
        ("download vs cat", download, lambda: _raw_download(server, raw, total), ">= 0.9"),
    ):
        baseline, measured = median_pair(theirs, ours, repeat)
        figures.append(
            Figure(
                f"{verb} {mib(total)}",
                round(baseline / measured, 2),
                "x",
                goal,
                repeats=repeat,
                detail={
                    "transport_MBps": round(total / measured / 1e6, 1),
                    "raw_cat_MBps": round(total / baseline / 1e6, 1),
                },
            )
        )
    raw.unlink()
    return figures


# -- peak RSS -------------------------------------------------------------------------


def serve_with_rss(report_dir: str, path: str) -> int:
    """Remote command for the RSS figure: serve, then record the peak growth.

    Each server process marks its start and publishes its figure by rename, so the
    reader can wait for exactly the processes that ran and never sees half a report.
    """
    from mkit_transport.server.ssh import serve

    before = proc_status("VmRSS")
    name = Path(report_dir) / str(os.getpid())
    name.with_suffix(".start").touch()
    status = serve(path, sys.stdin.buffer, sys.stdout.buffer)
    # VmHWM, as bench.common measures a child: ru_maxrss would carry over the peak
    # of the processes that forked and exec'd this one (sshd, the shell).
    peak = proc_status("VmHWM")
    partial = name.with_suffix(".partial")
    partial.write_text(json.dumps({"growth": max(0, peak - before)}))
    partial.rename(name.with_suffix(".json"))
    return status


def rss_upload(url: str, options_json: str, total: str) -> object:
    """child_peak_rss target: the returned operation uploads ``total`` bytes."""
    size = int(total)
    key = _key(size)
    options = json.loads(options_json)
    transport = open_transport(url, **options)
    transport.pack_exists(key)  # connect before measuring

    def operation() -> None:
        transport.upload_pack_stream(key, _chunks(size), size)
        transport.close()

    return operation


def rss_download(url: str, options_json: str, total: str) -> object:
    size = int(total)
    key = _key(size)
    transport = open_transport(url, **json.loads(options_json))
    transport.pack_exists(key)

    def operation() -> None:
        assert sum(len(c) for c in transport.download_pack_stream(key)) == size
        transport.close()

    return operation


def _server_growths(reports: Path, timeout: float = 10.0) -> list[int]:
    """Peak growths of every server process that started, once each has reported."""
    deadline = time.monotonic() + timeout
    while True:
        started = {p.stem for p in reports.glob("*.start")}
        done = {p.stem: p for p in reports.glob("*.json")}
        if started and started <= done.keys():
            return [int(json.loads(done[s].read_text())["growth"]) for s in started]
        if time.monotonic() > deadline:
            missing = sorted(started - done.keys()) or ["(none started)"]
            raise RuntimeError(f"ssh server processes did not report their RSS: {missing}")
        time.sleep(0.05)  # a server process records its peak as it exits


def _memory(server: SshServer, total: int) -> list[Figure]:
    root = server.store("memory")
    url = server.url(root)
    figures: list[Figure] = []
    for verb, target in (("upload", "rss_upload"), ("download", "rss_download")):
        reports = Path(server.directory) / f"server-rss-{verb}"
        shutil.rmtree(reports, ignore_errors=True)
        reports.mkdir()
        remote = f"{sys.executable} {Path(__file__).resolve()} --serve-with-rss {reports}"
        options = json.dumps(_options(server, remote))
        client = child_peak_rss(f"bench.bench_ssh:{target}", url, options, str(total))
        server_growth = max(_server_growths(reports))
        figures += [
            Figure(
                f"{verb} {side} peak RSS growth {mib(total)}",
                round(growth / MIB, 1),
                "MiB",
                "<= 64",
                kind="memory",
            )
            for side, growth in (("client", client), ("server", server_growth))
        ]
    return figures


# -- CAS counter across processes --------------------------------------------------------


def _increment(args: tuple[str, dict[str, object], int]) -> int:
    url, options, count = args
    conflicts = 0
    with open_transport(url, **options) as transport:
        for _ in range(count):
            while True:
                current = transport.read_ref(REF)
                n = int.from_bytes(bytes(current), "big") if current is not None else 0
                condition = (
                    RefWriteCondition.match(current) if current else RefWriteCondition.MISSING
                )
                try:
                    transport.update_ref(REF, condition, Hash((n + 1).to_bytes(32, "big")))
                    break
                except RefConflict:
                    conflicts += 1
    return conflicts


def _counter(server: SshServer, workers: int, increments: int) -> list[Figure]:
    root = server.store("counter")
    url = server.url(root)
    options = _options(server)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        conflicts = sum(pool.map(_increment, [(url, options, increments)] * workers))
    elapsed = time.perf_counter() - started
    with open_transport(url, **options) as transport:
        final = transport.read_ref(REF)
    count = int.from_bytes(bytes(final), "big") if final else 0
    expected = workers * increments
    return [
        Figure(
            "CAS counter: final count",
            count,
            "increments",
            f"== {expected}",
            kind="exact",
            detail={"processes": workers, "increments_each": increments},
        ),
        Figure("CAS counter: conflicts_retried", conflicts, kind="exact"),
        Figure("CAS counter: seconds", round(elapsed, 1), "s"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run)")
    parser.add_argument("--serve-with-rss", nargs=2, metavar=("REPORT_DIR", "PATH"))
    args = parser.parse_args()
    if args.serve_with_rss:
        return serve_with_rss(*args.serve_with_rss)
    size, rss_size, repeat = (16 * MIB, 32 * MIB, 1) if args.quick else (256 * MIB, 1024 * MIB, 5)
    increments = 10 if args.quick else 100
    with (
        tempfile.TemporaryDirectory(prefix="bench-ssh-") as scratch,
        running_sshd(Path(scratch)) as server,
    ):
        results = Results("ssh", args.quick)
        results.section("ssh_throughput", _throughput(server, size, repeat))
        results.section("ssh_peak_rss", _memory(server, rss_size))
        results.section("ssh_cas_counter", _counter(server, 8, increments))
    results.finish()  # the counter must be exact
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
