"""Refs: every CAS cell, the name grammar at every verb, the wire form, listing rules."""

from __future__ import annotations

import concurrent.futures

import pytest

from mkit_transport import (
    ConflictBackoff,
    Hash,
    InvalidArgument,
    InvalidRef,
    InvalidResponse,
    PackKey,
    Ref,
    RefConflict,
    RefWriteCondition,
    Transport,
)
from mkit_transport.refs import is_valid_ref_name

from .base import SuiteBase, make_pack, value_of
from .harness import Backdoor, Harness

__all__ = ["BAD_NAMES", "BAD_PREFIXES", "GOOD_TAILS", "RefSuite"]

spec = pytest.mark.spec

#: Valid name tails, appended to the test's namespace (so they are written safely).
GOOD_TAILS = [
    "main",
    "feat/v1.0-beta",
    "release/2024_09",
    "a",
    "A/B/C",
    "x.y.z",
    "-dash",
    "under_score",
    "v1..2",  # '..' inside a segment is fine; only a leading '.' is not
    "HEAD/x",  # HEAD is refused only as the last segment
    "HEADS",
    "head",
    "lockfile",
    "x.locked",
    "deep/" * 10 + "leaf",
    "9" * 200,
    "MiXeD/CaSe",
    "trailing-dot.",
]

#: Invalid full names: each is refused with InvalidRef at every verb, before any I/O.
BAD_NAMES = [
    "",
    "main",  # not under refs/
    "heads/main",
    "refs",
    "refs/",
    "/refs/heads/main",
    "refs//main",
    "refs/heads/",
    "refs/heads//x",
    "refs/.hidden",
    "refs/heads/.x",
    "refs/heads/..",
    "refs/heads/.",
    "refs/heads/main.lock",
    "refs/HEAD",
    "refs/heads/HEAD",
    "refs/heads/a b",
    "refs/heads/a\tb",
    "refs/heads/a\nb",
    "refs/heads/a\x00b",
    "refs/heads/a\\b",
    "refs/heads/a@{1}",
    "refs/heads/a:b",
    "refs/heads/a~1",
    "refs/heads/a^",
    "refs/heads/a?",
    "refs/heads/a*",
    "refs/heads/a[b",
    "refs/heads/caf\u00e9",
    "refs/heads/\u2603",
    "REFS/heads/main",
    "Refs/x",
    "refs/heads/" + "x" * 256,  # a segment over 255 bytes
    "refs/" + "/".join(["abcdefgh"] * 60),  # a name over 512 bytes
    "refs/heads/a%2Fb",
    "refs/heads/a+b",
    "refs/heads/a;rm",
    "refs/heads/$(x)",
    "refs/heads/a\rb",
    "./refs/x",
    "refs/../packs",
    "packs/" + "0" * 64,  # the upstream namespace collision: not a ref name here
]

#: Bad names that are nevertheless valid list_refs prefixes.
_VALID_AS_PREFIX = {"", "refs", "refs/", "refs/heads/", "refs/HEAD", "refs/heads/HEAD"}

#: Invalid list_refs prefixes.
BAD_PREFIXES = [
    "/",
    "//",
    "heads",
    "refs//x",
    "/refs",
    "refs/.x",
    "refs/a b",
    "packs",
    "refs/\u00e9",
]

#: The CAS table: (initial state, condition, expected outcome).
_A, _B, _N = value_of("cas-A"), value_of("cas-B"), value_of("cas-new")
CAS_CELLS = [
    ("absent", "ANY", "written"),
    ("absent", "MISSING", "written"),
    ("absent", "match(A)", "conflict"),
    ("A", "ANY", "written"),
    ("A", "MISSING", "conflict"),
    ("A", "match(A)", "written"),
    ("A", "match(B)", "conflict"),
    ("A", "match(new)", "conflict"),
]


def _condition(text: str) -> RefWriteCondition:
    return {
        "ANY": RefWriteCondition.ANY,
        "MISSING": RefWriteCondition.MISSING,
        "match(A)": RefWriteCondition.match(_A),
        "match(B)": RefWriteCondition.match(_B),
        "match(new)": RefWriteCondition.match(_N),
    }[text]


class RefSuite(SuiteBase):
    """Ref reads, CAS writes, names and listings behave the same on every transport."""

    @spec("T-REF-1")
    @pytest.mark.parametrize(("initial", "condition", "outcome"), CAS_CELLS)
    def test_cas_cell(
        self, transport: Transport, ns: str, initial: str, condition: str, outcome: str
    ) -> None:
        name = f"{ns}/cas"
        before = None if initial == "absent" else _A
        if before is not None:
            transport.update_ref(name, RefWriteCondition.MISSING, before)
        if outcome == "written":
            transport.update_ref(name, _condition(condition), _N)
            assert transport.read_ref(name) == _N
        else:
            with pytest.raises(RefConflict) as caught:
                transport.update_ref(name, _condition(condition), _N)
            assert transport.read_ref(name) == before, "a failed CAS must change nothing"
            if caught.value.known:
                assert caught.value.current == before

    @spec("T-REF-1")
    @pytest.mark.parametrize("shared", ["prefix", "suffix"])
    def test_cas_compares_the_whole_hash(self, transport: Transport, ns: str, shared: str) -> None:
        """Values equal but for their last (or first) byte are different values."""
        stored = Hash(bytes(range(1, 33)))
        body = bytes(range(1, 33))
        near = Hash(body[:-1] + b"\xff") if shared == "prefix" else Hash(b"\xff" + body[1:])
        name = f"{ns}/near-miss"
        transport.update_ref(name, RefWriteCondition.MISSING, stored)
        with pytest.raises(RefConflict):
            transport.update_ref(name, RefWriteCondition.match(near), _N)
        assert transport.read_ref(name) == stored
        transport.update_ref(name, RefWriteCondition.match(stored), near)
        assert transport.read_ref(name) == near
        with pytest.raises(RefConflict):
            transport.update_ref(name, RefWriteCondition.match(stored), _N)
        assert transport.read_ref(name) == near

    @spec("T-REF-2")
    def test_read_absent_is_none(self, transport: Transport, ns: str) -> None:
        assert transport.read_ref(f"{ns}/absent") is None

    @spec("T-REF-2")
    def test_write_ref_overwrites(self, transport: Transport, ns: str) -> None:
        name = f"{ns}/overwrite"
        transport.write_ref(name, _A)
        transport.write_ref(name, _B)
        transport.write_ref(name, _B)
        assert transport.read_ref(name) == _B

    @spec("T-REF-3")
    @pytest.mark.parametrize("tail", GOOD_TAILS)
    def test_good_name_at_every_verb(self, transport: Transport, ns: str, tail: str) -> None:
        name = f"{ns}/{tail}"
        assert transport.read_ref(name) is None
        transport.update_ref(name, RefWriteCondition.MISSING, _A)
        transport.update_ref(name, RefWriteCondition.match(_A), _B)
        transport.write_ref(name, _N)
        assert transport.read_ref(name) == _N
        assert Ref(tail, _N) in transport.list_refs(ns)
        parent = name.rsplit("/", 1)[0]
        assert Ref(name.rsplit("/", 1)[1], _N) in transport.list_refs(parent)

    @spec("T-REF-4")
    @pytest.mark.parametrize("name", BAD_NAMES)
    def test_bad_name_refused_at_every_verb(self, transport: Transport, ns: str, name: str) -> None:
        with pytest.raises(InvalidRef):
            transport.read_ref(name)
        with pytest.raises(InvalidRef):
            transport.write_ref(name, _A)
        with pytest.raises(InvalidRef):
            transport.update_ref(name, RefWriteCondition.MISSING, _A)
        with pytest.raises(InvalidRef):
            transport.update_ref(name, RefWriteCondition.match(_A), _B)
        if name not in _VALID_AS_PREFIX:
            with pytest.raises(InvalidRef):
                transport.list_refs(name)

    @spec("T-REF-4")
    def test_bad_names_change_nothing(self, transport: Transport, ns: str) -> None:
        transport.write_ref(f"{ns}/keep", _A)
        for name in BAD_NAMES:
            with pytest.raises(InvalidRef):
                transport.write_ref(name, _B)
        assert transport.list_refs(ns) == [Ref("keep", _A)]

    @spec("T-REF-5")
    @pytest.mark.parametrize("prefix", BAD_PREFIXES)
    def test_bad_prefix_refused(self, transport: Transport, prefix: str) -> None:
        with pytest.raises(InvalidRef):
            transport.list_refs(prefix)

    @spec("T-REF-6")
    def test_bad_value_types_refused(self, transport: Transport, ns: str) -> None:
        name = f"{ns}/typed"
        with pytest.raises(InvalidArgument):
            transport.write_ref(name, PackKey(bytes(_A)))  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            transport.update_ref(name, "MISSING", _A)  # type: ignore[arg-type]
        with pytest.raises(InvalidRef):
            Hash.from_hex(_A.hex().upper())
        assert transport.read_ref(name) is None

    @spec("T-REF-7")
    def test_wire_form_is_65_bytes(self, transport: Transport, ns: str, backdoor: Backdoor) -> None:
        name = f"{ns}/wire"
        transport.write_ref(name, _A)
        assert backdoor.read_ref_bytes(name) == _A.hex().encode() + b"\n"
        transport.update_ref(name, RefWriteCondition.match(_A), _B)
        assert backdoor.read_ref_bytes(name) == _B.hex().encode() + b"\n"

    @spec("T-REF-8")
    @pytest.mark.parametrize(
        "raw",
        [
            b"",
            b"\n",
            _A.hex().encode(),  # no LF
            _A.hex().upper().encode() + b"\n",
            _A.hex().encode() + b"\r\n",
            _A.hex().encode() + b" \n",
            _A.hex().encode() + b"\n\n",
            _A.hex()[:63].encode() + b"\n",
            b" " + _A.hex().encode() + b"\n",
            _A.hex().encode()[:-1] + b"g\n",
            b"\x00" * 65,
        ],
    )
    def test_malformed_stored_value_is_refused(
        self, transport: Transport, ns: str, backdoor: Backdoor, raw: bytes
    ) -> None:
        name = f"{ns}/malformed"
        transport.write_ref(name, _A)  # make the ref exist the normal way first
        backdoor.write_ref_bytes(name, raw)
        try:
            with pytest.raises(InvalidResponse):
                transport.read_ref(name)
            with pytest.raises(InvalidResponse):
                transport.list_refs(ns)
        finally:
            # Leave the store sound: the suite may share it with other tests and users.
            backdoor.write_ref_bytes(name, _A.hex().encode() + b"\n")

    @spec("T-LIST-1")
    def test_listing_component_boundary(self, transport: Transport, ns: str) -> None:
        for tail in ("feat", "feat/x", "feat/y/z", "featx", "feat-x", "fea"):
            transport.write_ref(f"{ns}/heads/{tail}", value_of(tail))
        want = [Ref("x", value_of("feat/x")), Ref("y/z", value_of("feat/y/z"))]
        assert transport.list_refs(f"{ns}/heads/feat") == want
        assert transport.list_refs(f"{ns}/heads/feat/") == want
        assert transport.list_refs(f"{ns}/heads/feat//") == want

    @spec("T-LIST-2")
    def test_listing_sorted_unique_and_relative(self, transport: Transport, ns: str) -> None:
        tails = ["b", "a", "c/d", "c", "B", "a-b", "a.b", "a/b"]
        for tail in tails:
            transport.write_ref(f"{ns}/{tail}", value_of(tail))
        transport.write_ref(f"{ns}/a", value_of("a"))  # rewriting must not duplicate
        listed = transport.list_refs(ns)
        assert [r.name for r in listed] == sorted(tails)
        assert all(r.hash == value_of(r.name) for r in listed)

    @spec("T-LIST-3")
    def test_listing_of_an_unknown_prefix_is_empty(self, transport: Transport, ns: str) -> None:
        assert transport.list_refs(f"{ns}/nothing/here") == []
        transport.write_ref(f"{ns}/exact", _A)
        assert transport.list_refs(f"{ns}/exact") == [], "a ref named exactly the prefix"

    @spec("T-LIST-4")
    def test_empty_prefix_lists_full_names_and_never_packs(
        self, transport: Transport, ns: str, salt: bytes, harness: Harness
    ) -> None:
        data, key = make_pack(salt, "not-a-ref")
        transport.upload_pack(data, key)
        transport.write_ref(f"{ns}/one", _A)
        transport.write_ref(f"{ns}/two/three", _B)
        everything = transport.list_refs("")
        names = [r.name for r in everything]
        assert names == sorted(set(names))
        assert all(n.startswith("refs/") for n in names), "packs never show up as refs"
        mine = [r for r in everything if r.name.startswith(ns + "/")]
        assert mine == [Ref(f"{ns}/one", _A), Ref(f"{ns}/two/three", _B)]
        under_refs = [Ref(r.name.removeprefix("refs/"), r.hash) for r in everything]
        assert [r for r in transport.list_refs("refs") if r in under_refs] == under_refs
        assert transport.list_refs("refs/") == transport.list_refs("refs")
        if harness.fresh:
            assert everything == mine

    @spec("T-LIST-6")
    def test_listing_past_one_page(self, transport: Transport, harness: Harness, ns: str) -> None:
        """More refs than an object store returns per page (1000): all of them, in order."""
        count = harness.listing_refs
        if count <= 0:
            pytest.skip("the harness sets listing_refs to 0 (a store too slow for it)")
        names = [f"many/{i:05d}" for i in range(count)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda tail: transport.write_ref(f"{ns}/{tail}", _A), names))
        listed = transport.list_refs(f"{ns}/many")
        assert len(listed) == count, f"listed {len(listed)} of {count} refs"
        assert [r.name for r in listed] == [n.removeprefix("many/") for n in names]
        assert len(transport.list_refs(ns)) == count

    @spec("T-LIST-6")
    def test_listing_byte_order_edges(self, transport: Transport, ns: str) -> None:
        """A prefix range ends after every name under it, whatever its bytes.

        Names continuing past ``z`` (``zz``, ``zzzz/z``), the smallest and largest
        bytes of the grammar (``-``, ``.``, ``0``, ``Z``, ``_``, ``z``), and siblings
        of the prefix that sort between its children (``a-``, ``a.`` come before
        ``a/`` in byte order, ``a0`` and ``a_`` after it).
        """
        inside = ["-", ".x", "0", "Z", "_", "z", "zz", "zzzz/zzz", "z" * 40 + "9", "~x"]
        inside = [t for t in inside if is_valid_ref_name(f"{ns}/a/{t}")]
        outside = ["a-", "a.x", "a0", "a_", "az", "b"]
        for tail in inside:
            transport.write_ref(f"{ns}/a/{tail}", value_of(tail))
        for tail in outside:
            transport.write_ref(f"{ns}/{tail}", value_of(tail))
        want = [Ref(t, value_of(t)) for t in sorted(inside)]
        assert transport.list_refs(f"{ns}/a") == want
        assert [r.name for r in transport.list_refs(ns)] == sorted(
            [f"a/{t}" for t in inside] + outside
        )
        assert transport.list_refs(f"{ns}/a/z") == [], "zz is not under z"
        assert transport.list_refs(f"{ns}/a/zzzz") == [Ref("zzz", value_of("zzzz/zzz"))]

    @spec("T-VIS-1")
    def test_another_client_sees_every_write(
        self, transport: Transport, harness: Harness, ns: str, salt: bytes
    ) -> None:
        """Read-your-writes, and a second client sees them at once (no stale cache)."""
        name = f"{ns}/seen"
        data, key = make_pack(salt, "seen-pack")
        with harness.open(None) as other:
            assert other.read_ref(name) is None  # a client that caches would keep this
            assert other.list_refs(ns) == []
            assert other.pack_exists(key) is False
            transport.write_ref(name, _A)
            assert transport.read_ref(name) == _A, "read your own write"
            assert other.read_ref(name) == _A
            assert other.list_refs(ns) == [Ref("seen", _A)]
            transport.update_ref(name, RefWriteCondition.match(_A), _B)
            assert other.read_ref(name) == _B
            other.update_ref(name, RefWriteCondition.match(_B), _N)
            assert transport.read_ref(name) == _N
            assert transport.list_refs(ns) == [Ref("seen", _N)]
            transport.upload_pack(data, key)
            assert other.pack_exists(key) is True
            assert other.download_pack(key) == data

    @spec("T-LIST-5")
    def test_ref_and_its_children_coexist(self, transport: Transport, ns: str) -> None:
        transport.write_ref(f"{ns}/a", _A)
        transport.write_ref(f"{ns}/a/b", _B)
        assert transport.read_ref(f"{ns}/a") == _A
        assert transport.list_refs(ns) == [Ref("a", _A), Ref("a/b", _B)]
        assert transport.list_refs(f"{ns}/a") == [Ref("b", _B)]

    @spec("T-REF-9")
    def test_update_ref_with_writes_only_over_what_change_saw(
        self, transport: Transport, ns: str
    ) -> None:
        """A write that lands between the read and the CAS sends the loop round again."""
        name = f"{ns}/rmw"
        seen: list[Hash | None] = []

        def change(current: Hash | None) -> Hash:
            seen.append(current)
            if len(seen) == 1:  # another writer gets in after the read
                transport.update_ref(name, RefWriteCondition.MISSING, _A)
            return _B if current == _A else _N

        no_wait = ConflictBackoff(sleep=lambda _: None)
        assert transport.update_ref_with(name, change, backoff=no_wait) == _B
        assert seen == [None, _A], "change is called again with the value that won"
        assert transport.read_ref(name) == _B
        assert transport.update_ref_with(name, lambda v: _N, current=_A, known=True) == _N
        assert transport.read_ref(name) == _N, "a wrong guess costs a conflict, not a write"

    @spec("T-REF-10")
    def test_update_ref_with_that_fails_or_gives_up_changes_nothing(
        self, transport: Transport, ns: str
    ) -> None:
        name = f"{ns}/rmw-fail"
        transport.write_ref(name, _A)

        def refuse(current: Hash | None) -> Hash:
            raise KeyError("refused by the caller")

        with pytest.raises(KeyError):
            transport.update_ref_with(name, refuse)
        assert transport.read_ref(name) == _A
        waits: list[float] = []

        def lose(current: Hash | None) -> Hash:  # another writer wins every round
            transport.write_ref(name, _B if current != _B else _A)
            return _N

        with pytest.raises(RefConflict):
            transport.update_ref_with(
                name, lose, attempts=3, backoff=ConflictBackoff(sleep=waits.append)
            )
        assert transport.read_ref(name) in (_A, _B), "the loser's value is never written"
        assert len(waits) == 2 and all(0 <= w <= 0.128 for w in waits)
        for bad in (0, -1, True, 1.5):
            with pytest.raises(InvalidArgument):
                transport.update_ref_with(name, lose, attempts=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            transport.update_ref_with(name, _N)  # type: ignore[arg-type]
        with pytest.raises(InvalidRef):
            transport.update_ref_with(f"{ns}/../x", lose)
        assert transport.read_ref(name) in (_A, _B)
