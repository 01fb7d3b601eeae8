"""The one compiled part: the stat cache's lstat check (mkit_transport/sync/_lstat.c).

Everything else is in pyproject.toml. The extension is optional: where it cannot be
built (no compiler), the package installs without it and runs the same check in
Python (mkit_transport/sync/lstatcheck.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mkit_transport.sync._lstat",
            ["mkit_transport/sync/_lstat.c"],
            optional=True,
            extra_compile_args=["-O2", "-pthread"],
            extra_link_args=["-pthread"],
        )
    ]
)
