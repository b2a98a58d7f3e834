"""How long this process has lived: a job's wall counts from its process's start (the interpreter and its imports
included), which is what a scheduler charges, not from when the stage's own code began."""

from __future__ import annotations

import os
from pathlib import Path


def process_age() -> float | None:
    """Seconds since this process started (Linux), None where /proc cannot tell."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
