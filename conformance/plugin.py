"""The suite's pytest plugin: markers, ``--mkit-*`` options and fixtures.

Installed with the package as a ``pytest11`` entry point, so a third party's own test
run knows the suite's markers (``spec``, ``slow``; nothing warns under
``--strict-markers``) and options without copying a ``pytest.ini`` or ``conftest.py``.
pytest loads it in every run of an environment holding the package, so it imports
nothing but pytest at import time (Hypothesis may be absent until the suite is used).

Fixtures: ``mkit_url`` and ``mkit_options`` (what ``--mkit-url`` and ``--mkit-option``
say) and ``mkit_url_harness`` (a :class:`~mkit_transport.conformance.Harness` for that
URL, the one ``python -m mkit_transport conformance URL`` uses).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mkit_transport import Transport
    from mkit_transport.retry import RetryPolicy

    from .harness import Backdoor, Harness, StoreFaults

#: The markers the suite's tests carry.
MARKERS = (
    "spec(ids): the normative MUSTs (spec/*.md) a conformance test checks",
    "slow: long-running test",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mkit_transport conformance")
    group.addoption(
        "--mkit-url",
        default=None,
        help="transport URL to test (default: a fresh mkit+file:// store in a temp dir)",
    )
    group.addoption(
        "--mkit-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option passed to open_transport (repeatable)",
    )
    group.addoption(
        "--mkit-no-backdoor",
        action="store_true",
        help="use no back door or fault hook even where one is known (as for a remote)",
    )
    group.addoption(
        "--mkit-quick",
        action="store_true",
        help="smaller races, state machine and large pack (for slow remotes)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)


@pytest.fixture
def mkit_url(request: pytest.FixtureRequest) -> str | None:
    """The ``--mkit-url`` given on the command line, or ``None``."""
    url: str | None = request.config.getoption("--mkit-url")
    return url


@pytest.fixture
def mkit_options(request: pytest.FixtureRequest) -> dict[str, object]:
    """The ``--mkit-option KEY=VALUE`` pairs, as keyword arguments for open_transport."""
    options: dict[str, object] = {}
    for item in request.config.getoption("--mkit-option"):
        key, _, text = item.partition("=")
        options[key] = text
    return options


@pytest.fixture
def mkit_url_harness(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    mkit_url: str | None,
    mkit_options: dict[str, object],
) -> Harness:
    """A harness for ``--mkit-url`` (default: a fresh temporary file store)."""
    from mkit_transport import open_transport

    from .harness import Harness

    url, fresh = mkit_url, False
    if url in ("mkit+memory://", "mkit+memory:///"):
        # An unnamed memory store is private to each client; the suite needs every
        # client it opens to see the same store, so give it a name.
        url, fresh = f"mkit+memory://conformance-{uuid.uuid4().hex}", True
    if url is None:
        url, fresh = f"mkit+file://{tmp_path_factory.mktemp('store')}", True
    options = dict(mkit_options)

    def opener(retry: RetryPolicy | None) -> Transport:
        extra = dict(options)
        if retry is not None:
            extra["retry"] = retry
        return open_transport(url, **extra)

    with opener(None) as probe:
        backdoor, faults = _backdoor(probe)
    if request.config.getoption("--mkit-no-backdoor"):
        backdoor = faults = None
    harness = Harness(
        open=opener, url=url, options=options, backdoor=backdoor, faults=faults, fresh=fresh
    )
    if request.config.getoption("--mkit-quick"):
        harness.large_pack_size = 8 << 20
        harness.race_rounds = 4
        harness.counter_increments = 10
        harness.stateful_examples = 5
    return harness


def _backdoor(transport: Transport) -> tuple[Backdoor | None, StoreFaults | None]:
    """The back doors and fault hooks we can open from a URL alone (local stores)."""
    from mkit_transport import FileTransport, MemoryTransport

    from .harness import FileBackdoor, FileFaults, MemoryBackdoor, MemoryFaults

    if isinstance(transport, FileTransport):
        return FileBackdoor(transport.root), FileFaults()
    if isinstance(transport, MemoryTransport):
        return MemoryBackdoor(transport.store), MemoryFaults(transport.store)
    return None, None
