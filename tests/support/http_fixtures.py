"""Fixtures for the http tests (loaded by tests/conftest.py)."""
