"""URL dispatch: the scheme table, refusals, options, lazy imports, registration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import ClassVar, Self

import pytest

from mkit_transport import (
    FileTransport,
    InvalidArgument,
    InvalidRef,
    MemoryTransport,
    RetryPolicy,
    Transport,
    open_transport,
    register_transport,
)
from mkit_transport.urls import (
    BUILTIN_SCHEMES,
    pop_seconds,
    registered_schemes,
    scheme_target,
    split_url,
)


def test_memory_urls_share_by_name() -> None:
    a = open_transport("mkit+memory://shared-by-name")
    b = open_transport("mkit+memory://shared-by-name")
    assert isinstance(a, MemoryTransport) and isinstance(b, MemoryTransport)
    assert a.store is b.store
    c, d = open_transport("mkit+memory://"), open_transport("mkit+memory://")
    assert isinstance(c, MemoryTransport) and isinstance(d, MemoryTransport)
    assert c.store is not d.store


def test_file_url(tmp_path: Path) -> None:
    t = open_transport(f"mkit+file://{tmp_path}")
    assert isinstance(t, FileTransport) and t.root == str(tmp_path)
    assert open_transport(f"mkit+file://localhost{tmp_path}").root == str(tmp_path)  # type: ignore[attr-defined]
    spaced = tmp_path / "with space"
    assert open_transport(f"mkit+file://{tmp_path}/with%20space").root == str(spaced)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "url",
    [
        "file:///tmp/x",
        "s3://bucket",
        "http://localhost/x",
        "https://h/x",
        "ssh://u@h/x",
        "MKIT+FILE:///tmp/x",
        "mkit+File:///tmp/x",
        "mkit+nosuch://x",
        "",
        "no-scheme",
        "mkit+file://relative/path",
        "mkit+file://host/abs",
        "mkit+file:relative",
        "mkit+file:///tmp/x#frag",
        "mkit+file:///tmp/x y",
        "mkit+file:///tmp/\nx",
        "mkit+memory://a/b",
        "mkit+memory://bad name",
        "mkit+memory://caf\u00e9",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(InvalidArgument):
        open_transport(url)


def test_bare_scheme_message_says_what_to_do() -> None:
    with pytest.raises(InvalidArgument, match=r"use mkit\+file://"):
        open_transport("file:///tmp/x")


def test_options_from_query_and_keywords(tmp_path: Path) -> None:
    t = open_transport(f"mkit+file://{tmp_path}?durable=false&retries=2")
    assert isinstance(t, FileTransport)
    assert t.durable is False and t.retry.retries == 2
    t = open_transport(f"mkit+file://{tmp_path}?durable=false", durable=True)
    assert isinstance(t, FileTransport) and t.durable is True  # keyword arguments win
    policy = RetryPolicy(retries=1)
    assert open_transport("mkit+memory://x", retry=policy).retry is policy


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("mkit+file:///tmp/x?nope=1", {}),
        ("mkit+file:///tmp/x", {"nope": 1}),
        ("mkit+file:///tmp/x?durable=maybe", {}),
        ("mkit+file:///tmp/x?retries=-1", {}),
        ("mkit+memory://x", {"retry": 3}),
    ],
)
def test_bad_options(url: str, options: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument) as refused:
        open_transport(url, **options)
    # One class for one meaning: a bad option is a ValueError to plain Python code
    # too, and never a bad ref name.
    assert isinstance(refused.value, ValueError)
    assert not isinstance(refused.value, InvalidRef)


def test_a_bad_url_is_caught_as_a_value_error() -> None:
    with pytest.raises(ValueError, match="bare file://"):
        open_transport("file:///tmp/x")


def test_split_url_refuses_secret_keys_however_spelled() -> None:
    for query in ("pw=SECRET", "%70w=SECRET", "a=1&p%77", "pw=SECRET x#frag", "PW=SECRET"):
        with pytest.raises(InvalidArgument, match="pw may not appear in a URL") as refused:
            split_url(f"mkit+x://h/p?{query}", {}, secrets=("pw",))
        assert "SECRET" not in str(refused.value)
    options: dict[str, object] = {"pw": "kw"}  # as a keyword argument it is fine
    split_url("mkit+x://h/p?a=1", options, secrets=("pw",))
    assert options == {"pw": "kw", "a": "1"}
    plain: dict[str, object] = {}
    split_url("mkit+x://h/p?%70w=1", plain)  # only the secrets given are refused
    assert plain == {"pw": "1"}


def test_pop_seconds() -> None:
    options: dict[str, object] = {"a": "2.5", "b": 3, "c": "soon", "d": None}
    assert pop_seconds(options, "a", None) == 2.5
    assert pop_seconds(options, "b", None) == 3.0
    assert pop_seconds(options, "d", 7.0) == 7.0
    assert pop_seconds(options, "missing", None) is None
    with pytest.raises(InvalidArgument, match="option 'c' must be seconds, got 'soon'"):
        pop_seconds(options, "c", None)
    assert options == {}


def test_scheme_table_covers_every_transport() -> None:
    assert set(BUILTIN_SCHEMES) == {
        "mkit+memory",
        "mkit+file",
        "mkit+http",
        "mkit+https",
        "mkit+s3",
        "mkit+s3+http",
        "mkit+ssh",
    }
    assert registered_schemes()[: len(BUILTIN_SCHEMES)] == list(BUILTIN_SCHEMES)


def test_a_scheme_not_built_says_so() -> None:
    register_transport("mkit+later", "mkit_transport.transports.later:LaterTransport")
    with pytest.raises(InvalidArgument, match="not built"):
        open_transport("mkit+later://x")


def test_third_party_registration() -> None:
    opened: list[str] = []

    def factory(url: str, **options: object) -> Transport:
        opened.append(url)
        return MemoryTransport()

    register_transport("mkit+thirdparty", factory)
    assert isinstance(open_transport("mkit+thirdparty://anything"), MemoryTransport)
    assert opened == ["mkit+thirdparty://anything"]
    with pytest.raises(InvalidArgument):
        register_transport("mkit+file", factory)
    with pytest.raises(InvalidArgument):
        register_transport("nomkit", factory)


class _FromUrlTransport(MemoryTransport):
    """A class registered by object: opened through ``from_url``, never as ``cls(url)``."""

    opened: ClassVar[list[str]] = []

    @classmethod
    def from_url(cls, url: str, **options: object) -> Self:
        cls.opened.append(url)
        return cls(f"from-url-{len(cls.opened)}")


def test_a_registered_class_opens_through_from_url(tmp_path: Path) -> None:
    register_transport("mkit+fromurl", _FromUrlTransport)
    url = f"mkit+fromurl://{tmp_path}/would-be-a-file"
    opened = open_transport(url)
    assert isinstance(opened, _FromUrlTransport)
    assert _FromUrlTransport.opened == [url]
    assert list(tmp_path.iterdir()) == [], "the URL was not taken as a store name or path"
    # A class defined at a module's top level can be re-registered by name in a child.
    assert scheme_target("mkit+fromurl") == f"{__name__}:_FromUrlTransport"


def test_scheme_target_of_unimportable_factories() -> None:
    register_transport("mkit+lambda", lambda url, **options: MemoryTransport())
    assert scheme_target("mkit+lambda") is None
    assert scheme_target("mkit+file") == "mkit_transport.transports.file:FileTransport"
    assert scheme_target("mkit+never-registered") is None


def test_entry_point_group(tmp_path: Path) -> None:
    """A distribution declaring the entry point is found by open_transport."""
    dist = tmp_path / "plug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[mkit_transport.transports]\nmkit+plug = plugmod:open_plug\n"
    )
    (tmp_path / "plugmod.py").write_text(
        "from mkit_transport import MemoryTransport\n"
        "def open_plug(url, **options):\n    return MemoryTransport('plugged')\n"
    )
    code = (
        "from mkit_transport import open_transport\nprint(repr(open_transport('mkit+plug://x')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert out.strip() == "MemoryTransport('plugged')"


def test_import_pulls_in_no_network_library() -> None:
    code = (
        "import sys, mkit_transport\n"
        "from mkit_transport import open_transport\n"
        "open_transport('mkit+memory://x')\n"
        "names = ('boto3', 'botocore', 'paramiko', 'requests')\n"
        "print(sorted(m for m in names if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
