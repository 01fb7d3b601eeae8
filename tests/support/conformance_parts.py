"""Which conformance topics a test class of this repository leaves to other tests.

The suite's error-mapping topic (``ErrorSuite``) makes the backing store fail
through a ``StoreFaults`` hook, which reaches only a store in the test's own process
(memory, file, SQLite). The remote transports' error mapping is tested instead
against real faults on the wire, which the hook could not produce: a fault-injecting
server and a TCP fault proxy (tests/test_http_faults.py, tests/test_ssh_faults.py)
and real S3 error answers (tests/test_s3_errors.py, tests/test_s3_faults.py).
"""

from __future__ import annotations

from typing import TypeVar

from mkit_transport.conformance import ErrorSuite

_C = TypeVar("_C", bound=type)


def error_mapping_tested_elsewhere(cls: _C) -> _C:
    """Leave ErrorSuite's tests out of ``cls`` (not collected, so never a skip)."""
    for name in dir(ErrorSuite):
        if name.startswith("test_"):
            setattr(cls, name, None)
    return cls
