"""Test support: real servers, fault injection and fixtures shared by test modules."""
