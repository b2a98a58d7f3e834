"""Send a rule script's output to the rule's log file (the Snakemake convention: one log per job)."""

import sys
from pathlib import Path


def to_log(path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout = sys.stderr = open(path, "w", buffering=1, encoding="utf-8")


def export_pythonpath(src) -> None:
    """Put src first on PYTHONPATH so that every job's script (which runs in its own Python, maybe from a
    conda env or a cluster venv without this package installed) imports this package."""
    import os

    parts = [str(src)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(src)]
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)
