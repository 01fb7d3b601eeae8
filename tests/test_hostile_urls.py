"""Hostile URLs and command lines: no weakened security, no leaked secret, one-line errors.

A URL may come from a config file in a cloned repository (git's ``ssh://-oProxyCommand``
class of bugs), so options that run a command or weaken verification are refused in its
query string (spec/SPEC-THREATS.md). Each case asserts the clean error and that nothing
was opened or created.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mkit_transport import InvalidArgument, open_transport
from mkit_transport.cli import main
from mkit_transport.cli.output import EXIT_CODES
from mkit_transport.transports.http import HttpTransport
from mkit_transport.transports.ssh import SshTransport

#: (URL, the option the refusal must name). Percent-encoded and miscased keys are the
#: same option (options are taken percent-decoded), so they are refused too.
WEAKENING = [
    ("mkit+ssh://u@h/srv/x?remote_command=touch%20/tmp/pwned", "remote_command"),
    ("mkit+ssh://u@h/srv/x?REMOTE_COMMAND=id", "remote_command"),
    ("mkit+ssh://u@h/srv/x?remote%5Fcommand=id", "remote_command"),
    ("mkit+ssh://u@h/srv/x?known_hosts_file=/dev/null", "known_hosts_file"),
    ("mkit+ssh://u@h/srv/x?host_key_policy=accept-new", "host_key_policy"),
    (
        "mkit+ssh://u@h/srv/x?known_hosts_file=/dev/null&host_key_policy=accept-new",
        "known_hosts_file",
    ),
    ("mkit+ssh://u@h/srv/x?config_file=/tmp/evil-config", "config_file"),
    ("mkit+https://example.com/p?verify=false", "verify"),
    ("mkit+https://example.com/p?verify=0", "verify"),
    ("mkit+https://example.com/p?Verify=/tmp/evil-ca.pem", "verify"),
]


@pytest.mark.parametrize(("url", "option"), WEAKENING)
def test_url_cannot_weaken_security(url: str, option: str, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    for cls in (SshTransport, HttpTransport):
        monkeypatch.setattr(cls, "__init__", lambda *args, **kw: opened.append(kw))
    with pytest.raises(InvalidArgument) as refused:
        open_transport(url)
    message = str(refused.value)
    assert f"option {option!r} may not come from a URL" in message
    assert "keyword argument" in message  # the safe way is named
    assert opened == []  # refused before any transport exists


@pytest.mark.parametrize(("url", "option"), WEAKENING[:1] + WEAKENING[-3:-2])
def test_cli_refuses_a_weakening_url_in_one_line(
    url: str, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["refs", "list", url], out=io.StringIO()) == EXIT_CODES["InvalidArgument"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mkit_transport: InvalidArgument: ")
    assert option in err
    assert not Path("/tmp/pwned").exists()


def test_the_same_options_are_taken_from_keywords_and_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The safe ways still work: a keyword argument or the user's environment."""
    none = str(tmp_path / "no-config")
    monkeypatch.setenv("MKIT_SSH_KNOWN_HOSTS_FILE", "/env/known")
    monkeypatch.setenv("MKIT_SSH_HOST_KEY_POLICY", "accept-new")
    t = open_transport("mkit+ssh://u@h/srv/x", remote_command="srv", config_file=none)
    assert isinstance(t, SshTransport)
    assert (t.command, t.known_hosts_file, t.host_key_policy) == (
        "srv /srv/x",
        "/env/known",
        "accept-new",
    )
    with open_transport("mkit+https://example.com/p", verify=False) as http:
        assert isinstance(http, HttpTransport)
        assert http._verify is False


@pytest.mark.parametrize("level", ["0", "50", "-1", "x"])
def test_a_bad_level_is_one_usage_line(
    level: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``push --level 50`` is refused by the parser: exit 2, one error line, nothing pushed."""
    store = tmp_path / "store"
    with pytest.raises(SystemExit) as stopped:
        main(["push", str(tmp_path), f"mkit+file://{store}", "refs/heads/m", "--level", level])
    assert stopped.value.code == EXIT_CODES["usage"]
    err = capsys.readouterr().err
    assert "Traceback" not in err and "zstd level" in err
    assert not store.exists()
