"""Disk before anything is queued: what the run will write under results/ against the free space there.

A 7B run writes its weights three times before any experiment (hub download, LitGPT checkpoint) and a full-size
model per experiment; a step checkpoint with the optimizer state is three times the 16-bit weights again. A run
that cannot fit is refused with the figures, before hours in a queue end in a full disk."""

from __future__ import annotations

import shutil
from pathlib import Path

from llmhpc.atomic import mount_point
from llmhpc.cluster.resources import model_parameters

GB = 1e9


def estimate(config: dict, experiments: dict) -> dict | None:
    """Bytes the run writes under results/, by part; None where the model's size is not known from its name."""
    params = model_parameters(config["model"]["name"])
    if params is None:
        return None
    weights = params * 2  # 16-bit weights: the hub's files, LitGPT's checkpoint, each fine-tuned model
    parts = {"hub weights": weights, "LitGPT checkpoint": weights}
    for name, settings in experiments.items():
        ft = settings["finetune"]
        parts[f"{name}: fine-tuned model"] = weights
        steps, every = ft.get("max_steps"), ft.get("save_interval") or 0
        # a step checkpoint: the model and its AdamW moments (an adapter run's holds only the adapters: small)
        if steps and every and every <= steps and ft.get("method", "full") == "full":
            kept = min(steps // every, 2)  # the newest whole one and the one being written (llmhpc.train.resume)
            parts[f"{name}: {kept} step checkpoint(s)"] = kept * weights * 3
    return parts


def problem(config: dict, experiments: dict, workdir) -> str | None:
    """Why the run cannot fit on the filesystem of results/, or None."""
    parts = estimate(config, experiments)
    if not parts:
        return None
    results = Path(workdir) / "results"
    where = next((p for p in (results, *results.parents) if p.exists()), None)
    if where is None:
        return None
    free = shutil.disk_usage(where).free
    # what is already written counts as written: rerunning a finished stage overwrites it in place
    need = sum(parts.values()) - _already(results)
    if need <= free:
        return None
    detail = ", ".join(f"{k} {v / GB:.1f} GB" for k, v in parts.items())
    return (f"the run writes about {sum(parts.values()) / GB:.1f} GB under {results} ({detail}) but the filesystem"
            f" {mount_point(where)} has {free / GB:.1f} GB free: free space there, or run from a clone on a larger"
            f" filesystem (on Gadi, /scratch/<project>)")


def unwritable(workdir) -> str | None:
    """Why the jobs could not write under results/ (it, a stage folder in it, or the working directory that would
    hold it is read-only), or None. Checked where it exists only: a dry run may be made before the clone is."""
    import os

    results = Path(workdir) / "results"
    folders = [results, *sorted(p for p in results.iterdir() if p.is_dir())] if results.is_dir() else [Path(workdir)]
    for folder in folders:
        if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
            return (f"{folder} is not writable (read-only, or another user's): every job writes its outputs under"
                    f" {results}; make it writable (chmod -R u+w {folder}) or run from a clone you can write")
    return None


def _already(results: Path) -> int:
    if not results.is_dir():
        return 0
    return sum(p.stat().st_size for p in results.rglob("*") if p.is_file() and not p.is_symlink())
