"""Fixtures for the s3 tests (loaded by tests/conftest.py)."""
