"""The built-in transports.

Only the local ones are imported here; network transports are imported by URL
dispatch when first used, so their dependencies stay optional.
"""

from .file import FileTransport
from .memory import MemoryStore, MemoryTransport

__all__ = ["FileTransport", "MemoryStore", "MemoryTransport"]
