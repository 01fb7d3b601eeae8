"""Fixture modules shared across the test suite; each helper owns one."""

pytest_plugins = [
    "tests.support.core_fixtures",
    "tests.support.http_fixtures",
    "tests.support.s3_fixtures",
    "tests.support.ssh_fixtures",
    "tests.support.sync_fixtures",
]
