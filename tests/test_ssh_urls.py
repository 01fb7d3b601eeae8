"""mkit+ssh:// URLs, options, environment and ~/.ssh/config; the CLI over SSH."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mkit_transport import FileTransport, Hash, InvalidArgument, PackKey, open_transport
from mkit_transport.cli import main
from mkit_transport.transports.ssh import DEFAULT_REMOTE_COMMAND, SshTransport, parse_ssh_url
from testbed.ssh_server import SshServer


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("mkit+ssh://git@example.com/srv/store", ("git", "example.com", None, "/srv/store")),
        ("mkit+ssh://git@example.com:2222/srv/store", ("git", "example.com", 2222, "/srv/store")),
        ("mkit+ssh://git@example.com:repos/a", ("git", "example.com", None, "repos/a")),
        ("mkit+ssh://git@example.com:/abs/a", ("git", "example.com", None, "/abs/a")),
        ("mkit+ssh://git@example.com:2222:repos/a", ("git", "example.com", 2222, "repos/a")),
        ("mkit+ssh://a.b+c_d-e@h-1.example:x", ("a.b+c_d-e", "h-1.example", None, "x")),
        ("mkit+ssh://u@[::1]:22/s", ("u", "::1", 22, "/s")),
        ("mkit+ssh://u@[::1]:s", ("u", "::1", None, "s")),
        ("mkit+ssh://u@h/s?timeout=3", ("u", "h", None, "/s")),
    ],
)
def test_url_forms(url: str, parts: tuple[object, ...]) -> None:
    assert parse_ssh_url(url) == parts


@pytest.mark.parametrize(
    "url",
    [
        "mkit+ssh://example.com/srv",  # no user@
        "mkit+ssh://@example.com/srv",  # empty user
        "mkit+ssh://-oProxyCommand=x@h/srv",  # leading '-' in user
        "mkit+ssh://u@-oProxyCommand=x/srv",  # leading '-' in host
        "mkit+ssh://u;id@h/srv",
        "mkit+ssh://u@h;id/srv",
        "mkit+ssh://u@h/srv;id",
        "mkit+ssh://u@h/$(id)",
        "mkit+ssh://u@h/a`id`",
        "mkit+ssh://u@h/a|b",
        "mkit+ssh://u@h/a&b",
        "mkit+ssh://u@h/a>b",
        "mkit+ssh://u@h/a'b",
        "mkit+ssh://u@h/a%20b",
        "mkit+ssh://u@h/a b",
        "mkit+ssh://u@h/a\nb",
        "mkit+ssh://u@h/",  # bare /
        "mkit+ssh://u@h",  # no path
        "mkit+ssh://u@h:",  # empty SCP path
        "mkit+ssh://u@h:2222",  # a port and no path
        "mkit+ssh://u@h:99999/x",  # port out of range
        "mkit+ssh://u@h:0/x",
        "mkit+ssh://u@h/a//b",
        "mkit+ssh://u@h/a/",
        "mkit+ssh://u@h/a/../b",
        "mkit+ssh://u@h/./a",
        "mkit+ssh://u@h:..",
        "mkit+ssh://u@h/x#frag",
        "MKIT+SSH://u@h/x",
        "ssh://u@h/x",
    ],
)
def test_bad_urls_are_refused_before_any_io(url: str) -> None:
    with pytest.raises(InvalidArgument):
        open_transport(url)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"host_key_policy": "yes"}, "host_key_policy"),
        ({"timeout": "soon"}, "seconds"),
        ({"identity_file": 3}, "string"),
        ({"compression": "yes"}, "unknown option"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        open_transport("mkit+ssh://u@h/x", **options)


def test_options_from_keywords_query_and_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MKIT_SSH_IDENTITY_FILE", "/env/key")
    monkeypatch.setenv("MKIT_SSH_HOST_KEY_POLICY", "accept-new")
    monkeypatch.setenv("MKIT_SSH_REMOTE_COMMAND", "mkit-serve --x")
    monkeypatch.setenv("MKIT_SSH_KNOWN_HOSTS_FILE", "/env/known")
    none = str(tmp_path / "no-config")
    t = open_transport("mkit+ssh://u@h:2:a?identity_file=/query/key&timeout=7", config_file=none)
    assert isinstance(t, SshTransport)
    assert (t.identity_file, t.host_key_policy, t.known_hosts_file) == (
        "/query/key",
        "accept-new",
        "/env/known",
    )
    assert t.command == "mkit-serve --x a"
    assert (t.host, t.port, t.timeout) == ("h", 2, 7.0)
    t = open_transport(
        "mkit+ssh://u@h:2/a",
        identity_file="/kw/key",
        remote_command="srv {path} --now",
        config_file=none,
    )
    assert isinstance(t, SshTransport)
    assert (t.identity_file, t.command) == ("/kw/key", "srv /a --now")


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "IDENTITY_FILE",
        "KNOWN_HOSTS_FILE",
        "HOST_KEY_POLICY",
        "REMOTE_COMMAND",
        "CONFIG_FILE",
    ):
        monkeypatch.delenv(f"MKIT_SSH_{name}", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    t = open_transport("mkit+ssh://u@h/srv/a")
    assert isinstance(t, SshTransport)
    assert t.host_key_policy == "reject"
    assert t.known_hosts_file == str(tmp_path / ".ssh" / "known_hosts")
    assert t.command == f"{DEFAULT_REMOTE_COMMAND} /srv/a"
    assert (t.port, t.identity_file) == (22, None)


def test_ssh_config_is_honoured(sshd: SshServer, tmp_path: Path) -> None:
    """A host alias from the config: HostName, Port, IdentityFile and known_hosts come from it."""
    root = sshd.store("config")
    config = tmp_path / "config"
    config.write_text(
        f"Host mkit-alias\n  HostName {sshd.host}\n  Port {sshd.port}\n"
        f"  IdentityFile {sshd.client_key}\n  UserKnownHostsFile {sshd.known_hosts}\n"
    )
    url = f"mkit+ssh://{sshd.user}@mkit-alias{root}"
    with open_transport(url, config_file=str(config), remote_command=sshd.remote_command) as t:
        t.write_ref("refs/heads/c", Hash.of(b"c"))
    assert FileTransport(root).read_ref("refs/heads/c") == Hash.of(b"c")


def test_cli_over_ssh_in_process(sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> None:
    root = sshd.store("cli")
    for name in ("identity_file", "known_hosts_file", "remote_command"):
        monkeypatch.setenv(f"MKIT_SSH_{name.upper()}", str(sshd.options()[name]))
    monkeypatch.setenv("MKIT_SSH_CONFIG_FILE", os.devnull)
    url = sshd.url(root)
    value = Hash.of(b"cli").hex()
    assert main(["refs", "write", url, "refs/heads/m", value, "--missing"], out=io.StringIO()) == 0
    assert main(["refs", "write", url, "refs/heads/m", value, "--missing"], out=io.StringIO()) == 13
    out = io.StringIO()
    assert main(["refs", "read", url, "refs/heads/m"], out=out) == 0
    assert out.getvalue().strip() == value


def test_cli_over_ssh_as_a_subprocess(sshd: SshServer, tmp_path: Path) -> None:
    root = sshd.store("cli-subprocess")
    pack = tmp_path / "pack"
    pack.write_bytes(os.urandom(3000))
    query = f"?identity_file={sshd.client_key}"
    env = {
        **os.environ,
        "MKIT_SSH_REMOTE_COMMAND": sshd.remote_command,
        # Options that decide host-key checking never come from the URL (the environment
        # is the user's): test_hostile_urls.py::test_url_cannot_weaken_security.
        "MKIT_SSH_KNOWN_HOSTS_FILE": sshd.known_hosts,
        "MKIT_SSH_CONFIG_FILE": os.devnull,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkit_transport",
            "packs",
            "upload",
            sshd.url(root) + query,
            str(pack),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    key = PackKey.from_hex(json.loads(done.stdout)["key"])
    assert FileTransport(root).download_pack(key) == pack.read_bytes()
    denied = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkit_transport",
            "refs",
            "list",
            sshd.url(root) + query.replace(sshd.client_key, sshd.other_key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert denied.returncode == 11, denied.stderr
    assert "AccessDenied" in denied.stderr
