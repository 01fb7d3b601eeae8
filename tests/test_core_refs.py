"""The ref-name grammar, prefixes and the listing rule, as pure functions."""

from __future__ import annotations

import pytest

from mkit_transport import Hash, InvalidRef, Ref
from mkit_transport.conformance.suite_refs import BAD_NAMES, BAD_PREFIXES, GOOD_TAILS
from mkit_transport.refs import (
    MAX_REF_NAME,
    filter_listing,
    is_valid_ref_name,
    normalize_prefix,
    validate_ref_name,
)


@pytest.mark.parametrize("tail", GOOD_TAILS)
def test_good(tail: str) -> None:
    assert validate_ref_name(f"refs/{tail}") == f"refs/{tail}"


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad(name: str) -> None:
    assert not is_valid_ref_name(name)
    with pytest.raises(InvalidRef) as caught:
        validate_ref_name(name)
    assert "invalid ref name" in str(caught.value)


def test_table_sizes() -> None:
    assert len(GOOD_TAILS) + len(BAD_NAMES) >= 40


def test_length_limits() -> None:
    longest = "refs/" + "/".join(["x" * 100] * 5)
    assert len(longest) <= MAX_REF_NAME
    validate_ref_name(longest)
    with pytest.raises(InvalidRef):
        validate_ref_name(longest + "/yyyyyyyyyyyyyyy")


@pytest.mark.parametrize(
    ("prefix", "normalized"),
    [
        ("", ""),
        ("refs", "refs"),
        ("refs/", "refs"),
        ("refs//", "refs"),
        ("refs/heads", "refs/heads"),
        ("refs/heads/", "refs/heads"),
        ("refs/x/HEAD", "refs/x/HEAD"),
    ],
)
def test_prefixes(prefix: str, normalized: str) -> None:
    assert normalize_prefix(prefix) == normalized


@pytest.mark.parametrize("prefix", BAD_PREFIXES)
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidRef):
        normalize_prefix(prefix)


def test_filter_listing() -> None:
    h = Hash.of(b"v")
    names = [
        "refs/heads/feat",
        "refs/heads/feat/x",
        "refs/heads/featx",
        "refs/heads/feat/a/b",
        "refs/heads/feat/x",
    ]
    got = filter_listing("refs/heads/feat", [(n, h) for n in names])
    assert got == [Ref("a/b", h), Ref("x", h)]
    assert [r.name for r in filter_listing("", [(n, h) for n in names])] == sorted(set(names))
