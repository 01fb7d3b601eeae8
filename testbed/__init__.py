"""Dev-only helpers shared by tests/ and bench/: servers, waits, the crash loop.

Not shipped in the wheel; neither tests/ nor bench/ imports the other.
"""
