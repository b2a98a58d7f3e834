"""The evaluate stage: score a LitGPT checkpoint on HellaSwag and write predictions and metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from llmhpc.eval.checkpoint import load_litgpt, resolve_device
from llmhpc.eval.reference import score_items


def evaluate(checkpoint_dir: Path, eval_file: Path, predictions_path: Path, metrics_path: Path,
             precision: str, batch_size: int, add_bos: bool, device: str, log=print) -> dict:
    t0 = time.perf_counter()
    device = resolve_device(device)
    from llmhpc.stages.data import read_hellaswag

    docs = read_hellaswag(eval_file)
    model, tokenizer = load_litgpt(checkpoint_dir, precision, device)
    t_loaded = time.perf_counter()
    bos_id = tokenizer.bos_id if add_bos else None
    if add_bos and bos_id is None:
        raise ValueError(f"evaluate.add_bos is true but the tokenizer in {checkpoint_dir} has no BOS token")

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, bos=False).tolist()

    rows = score_items(model, encode, docs, batch_size, bos_id, device)
    t_scored = time.perf_counter()
    Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
    with open(predictions_path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    n = len(rows)
    metrics = {
        "checkpoint": str(checkpoint_dir),
        "eval_file": str(eval_file),
        "items": n,
        "acc": sum(r["acc"] for r in rows) / n,
        "acc_norm": sum(r["acc_norm"] for r in rows) / n,
        "load_s": round(t_loaded - t0, 3),
        "score_s": round(t_scored - t_loaded, 3),
        "wall_s": round(time.perf_counter() - t0, 3),
        "items_per_s": round(n / (t_scored - t_loaded), 3),
        "bos_prepended": bool(add_bos),
        "precision": precision,
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "batch_size": batch_size,
    }
    Path(metrics_path).write_text(json.dumps(metrics, indent=1) + "\n")
    log(f"scored {n} items from {eval_file} with {checkpoint_dir}: acc {metrics['acc']:.4f}"
        f" acc_norm {metrics['acc_norm']:.4f} in {metrics['wall_s']} s")
    return metrics
