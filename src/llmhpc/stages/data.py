"""The data stage: fine-tune records (Alpaca JSON) and evaluation items (HellaSwag's schema), checked record by
record so that a bad one is named by file, record number and field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llmhpc import atomic
from llmhpc.eval.hellaswag import check_hellaswag_item, read_hellaswag
from llmhpc.records import DataError, load_records

ALPACA_FIELDS = ("instruction", "input", "output")


def check_alpaca(path: Path) -> list[dict]:
    records = load_records(path)
    if not records:
        raise DataError(f"{path}: no records")
    for n, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {n} (0-based): expected an object with {', '.join(ALPACA_FIELDS)}")
        for field in ALPACA_FIELDS:
            if field not in rec:
                # litgpt's alpaca prompt treats a missing input as empty; instruction and output are required
                if field == "input":
                    continue
                raise DataError(f"{path}: record {n} (0-based): field '{field}' is missing (expected a string)")
            if not isinstance(rec[field], str):
                raise DataError(f"{path}: record {n} (0-based): field '{field}' must be a string,"
                                f" got {type(rec[field]).__name__}")
        if not rec["output"].strip():
            raise DataError(f"{path}: record {n} (0-based): field 'output' is empty")
    return records


def write_jsonl(path: Path, items: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(path) as fh:
        for item in items:
            fh.write(json.dumps(item) + "\n")


def prepare_finetune(source: dict, out_dir: Path, embedded_dir: Path, log=print) -> dict:
    """Write out_dir/train.json and out_dir/val.json from the configured source; return counts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if source["source"] in ("embedded", "path"):
        src = Path(embedded_dir if source["source"] == "embedded" else source["path"])
        for name in ("train.json", "val.json"):
            if not (src / name).is_file():
                raise DataError(f"{src}: {name} is missing (data.finetune.path must hold train.json and val.json)")
            check_alpaca(src / name)
            shutil.copyfile(src / name, out_dir / name)
    elif source["source"] == "hf":  # the competition's split of a hub dataset
        rows = _hub_rows(source["repo_id"], source["revision"], "train")
        n = source["train_rows"]
        if len(rows) <= n:
            raise DataError(f"{source['repo_id']}: {len(rows)} rows, need more than data.finetune.train_rows = {n}")
        keep = [{k: r.get(k, "") for k in ALPACA_FIELDS} for r in rows]
        atomic.write_json(out_dir / "train.json", keep[:n])
        atomic.write_json(out_dir / "val.json", keep[-1:])
    elif source["source"] == "prose":
        from llmhpc.sources import prose

        train, val = prose.finetune_records()
        atomic.write_json(out_dir / "train.json", train)
        atomic.write_json(out_dir / "val.json", val)
    counts = {name: len(check_alpaca(out_dir / name)) for name in ("train.json", "val.json")}
    log(f"fine-tune set from {source['source']}: {counts}")
    return counts


def prepare_eval(source: dict, out_path: Path, embedded_file: Path, log=print) -> int:
    if source["source"] in ("embedded", "path"):
        src = Path(embedded_file if source["source"] == "embedded" else source["path"])
        items = read_hellaswag(src)
    elif source["source"] == "prose":
        from llmhpc.sources import prose

        items = prose.eval_records()
        for n, item in enumerate(items):
            check_hellaswag_item("pydoc_data", n, item)
    else:
        items = _hub_rows(source["repo_id"], source["revision"], source["split"])
        for n, item in enumerate(items):
            check_hellaswag_item(source["repo_id"], n, item)
    if source.get("limit"):
        items = items[: source["limit"]]
    write_jsonl(out_path, items)
    log(f"evaluation set from {source['source']}: {len(items)} items")
    return len(items)


def _hub_rows(repo_id: str, revision: str | None, split: str) -> list[dict]:
    """Rows of a hub dataset split (needs internet: the data rule is a local rule)."""
    import datasets

    return list(datasets.load_dataset(repo_id, split=split, revision=revision))
