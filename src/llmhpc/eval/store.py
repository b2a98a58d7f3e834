"""Results as they come: each scoring rank appends finished items to `<predictions>.part<rank>` (flushed after
every batch), so a killed run keeps what it scored; a new run with the same checkpoint, eval file, precision
and BOS reads the parts back and scores only the rest. At the end rank 0 writes the predictions file (sorted
by item, written to a temporary name and renamed) and removes the parts."""

from __future__ import annotations

import json
import os
from pathlib import Path


def part_path(predictions: Path, rank: int) -> Path:
    predictions = Path(predictions)
    return predictions.with_name(f"{predictions.name}.part{rank}")


def fingerprint_path(predictions: Path) -> Path:
    predictions = Path(predictions)
    return predictions.with_name(f"{predictions.name}.parts.json")


def _parts(predictions: Path) -> list[Path]:
    predictions = Path(predictions)
    return sorted(predictions.parent.glob(f"{predictions.name}.part[0-9]*"))


def read_parts(predictions: Path, fingerprint: dict, docs_queries: list[str] | None = None) -> list[dict]:
    """Rows scored by an earlier run of the same evaluation (an unfinished last line is skipped); parts of a
    different evaluation are removed. `docs_queries` (query per item) guards against a changed eval file."""
    fp = fingerprint_path(predictions)
    same = fp.is_file() and json.loads(fp.read_text(encoding="utf-8")) == fingerprint
    rows = {}
    for part in _parts(predictions):
        if not same:
            part.unlink()
            continue
        with open(part, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # cut off by the kill
                i = row.get("index")
                if docs_queries is not None and not (isinstance(i, int) and 0 <= i < len(docs_queries)
                                                     and docs_queries[i] == row.get("query")):
                    continue
                rows[i] = row
    Path(predictions).parent.mkdir(parents=True, exist_ok=True)
    fp.write_text(json.dumps(fingerprint, indent=1) + "\n", encoding="utf-8")
    return [rows[i] for i in sorted(rows)]


class PartWriter:
    """Appends rows to this rank's part file; flush() after each batch."""

    def __init__(self, predictions: Path, rank: int):
        self.fh = open(part_path(predictions, rank), "a", encoding="utf-8")

    def __call__(self, row: dict) -> None:
        self.fh.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def write_predictions(predictions: Path, rows: list[dict]) -> None:
    predictions = Path(predictions)
    predictions.parent.mkdir(parents=True, exist_ok=True)
    tmp = predictions.with_name(predictions.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in sorted(rows, key=lambda r: r["index"]):
            fh.write(json.dumps(row) + "\n")
    os.replace(tmp, predictions)


def remove_parts(predictions: Path) -> None:
    for part in _parts(predictions):
        part.unlink()
    fingerprint_path(predictions).unlink(missing_ok=True)
