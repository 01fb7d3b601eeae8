"""Fixture modules shared across the test suite; each helper owns one.

``tests.support.server_marker`` marks the tests that need a real server process
(``make check`` leaves them out); ``tests.support.no_skips`` fails a run that
skipped a test, except a conformance check declared not applicable.
"""

pytest_plugins = [
    "tests.support.core_fixtures",
    "tests.support.http_fixtures",
    "tests.support.nginx_fixtures",
    "tests.support.no_skips",
    "tests.support.s3_fixtures",
    "tests.support.server_marker",
    "tests.support.ssh_fixtures",
    "tests.support.sync_fixtures",
]
