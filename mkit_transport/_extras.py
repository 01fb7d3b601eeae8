"""Optional dependencies: which extra of the package installs each, and the hint to print.

A plain ``pip install mkit-transport`` has everything the library and the client verbs
need (requests, boto3 and paramiko are base dependencies, so every transport works).
Two features need more, and say so instead of failing with a ``ModuleNotFoundError``:

* the HTTP pack server (``serve http``) runs under gunicorn: extra ``server``;
* the conformance suite runs under pytest with Hypothesis: extra ``conformance``.

``all`` installs both. ``tests/test_extras.py`` keeps this table and ``pyproject.toml``
in step.
"""

from __future__ import annotations

import importlib
from typing import Final

from .errors import InvalidArgument

__all__ = ["EXTRA_OF", "hint", "require"]

#: Top-level module -> the extra that installs it.
EXTRA_OF: Final[dict[str, str]] = {
    "gunicorn": "server",
    "pytest": "conformance",
    "hypothesis": "conformance",
}


def hint(feature: str, module: str) -> str:
    """The one line that names what is missing and how to install it."""
    return f"{feature} needs {module}: pip install 'mkit-transport[{EXTRA_OF[module]}]'"


def require(feature: str, *modules: str) -> None:
    """Import each optional ``module`` that ``feature`` needs.

    Raises :class:`~mkit_transport.errors.InvalidArgument` with :func:`hint` for the
    first one that is not installed. A module that is installed but fails to import
    (a broken dependency of its own) is not a missing extra: that error propagates.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
            raise InvalidArgument(hint(feature, module)) from None
