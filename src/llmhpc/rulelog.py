"""Send a rule script's output to the rule's log file (the Snakemake convention: one log per job)."""

import sys
from pathlib import Path


def to_log(path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout = sys.stderr = open(path, "w", buffering=1, encoding="utf-8")
