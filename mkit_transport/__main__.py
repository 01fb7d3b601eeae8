"""Run the command line: ``python -m mkit_transport --help``."""

from .cli import main

raise SystemExit(main())
