"""Fixtures for the sync tests (loaded by tests/conftest.py)."""
