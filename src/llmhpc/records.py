"""Record files the data stage and the scorers read: a JSON array (.json) or one JSON object per line (.jsonl),
refused with the file and line named."""

from __future__ import annotations

import json
from pathlib import Path


class DataError(ValueError):
    """A dataset cannot be used; the message names the file, the record and the field."""


def load_records(path: Path) -> list:
    """A JSON array (.json) or one JSON object per line (.jsonl)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {n + 1} is not valid JSON ({err.msg})") from None
        return records
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON array of records, got {type(records).__name__}")
    return records
