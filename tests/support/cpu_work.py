"""Module-level functions for the CPU pool tests (a helper process imports them by name)."""

from __future__ import annotations

import os
import time


def pid_of(_: object) -> int:
    """Return the id of the process that ran this."""
    return os.getpid()


def pid_after(seconds: float) -> int:
    """Sleep ``seconds``, then return the id of the process that ran this."""
    time.sleep(seconds)
    return os.getpid()
