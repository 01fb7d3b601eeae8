"""Fixtures for the ssh tests (loaded by tests/conftest.py)."""
