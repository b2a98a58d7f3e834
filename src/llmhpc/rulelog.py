"""Send a rule script's output to the rule's log file (the Snakemake convention: one log per job)."""

import sys
from pathlib import Path

from llmhpc import process_exit


def to_log(path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout = sys.stderr = open(path, "w", buffering=1, encoding="utf-8")
    process_exit.skip_final_collection()  # every rule script calls this first: its exit is seconds shorter
