"""Stopping a server process the testbed started: one way for every server."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

__all__ = ["stop_process"]


def stop_process(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Stop ``process`` by its PID: SIGTERM, ``grace`` seconds, then SIGKILL.

    SIGTERM lets a server finish cleanly (gunicorn, sshd, nginx without waiting for
    connections as SIGQUIT would, weed); the bounded wait and SIGKILL make sure a
    hung one never outlives the test session.
    """
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
