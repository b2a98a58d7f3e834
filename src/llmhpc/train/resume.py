"""Resuming a fine-tune killed by its walltime, for both engines: the step checkpoints they write to
`out_dir/step-NNNNNN/` every `train.save_interval` optimizer steps (stock `litgpt finetune_full`: `lit_model.pth`
with the optimizer and scheduler state; the fsdp2 engine: a torch.distributed.checkpoint folder), which of them
are whole, and whether they were made with this run's training settings.

The workflow declares only `out_dir/final` as the fine-tune's output, so neither Snakemake (which deletes a failed
or incomplete job's outputs) nor the stage deletes the step folders: a rerun after a kill finds them. Before each
run the stage drops the folders a kill left half-written, and all of them where the training settings changed
(saved beside them in `resume-settings.json`); after a successful run it deletes them (each holds the optimizer
state, about three times the model).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

import yaml

from llmhpc import atomic
from llmhpc.settings import FinetuneSettings
from llmhpc.train import registry

SETTINGS_FILE = "resume-settings.json"
HISTORY_FILE = "attempts.json"  # the killed attempts of this run (llmhpc.train.attempts); goes with the steps
# Written after the weights: stock's last file of a step (its save_prompt_style), the fsdp2 engine's marker.
MARKERS = ("prompt_style.yaml", "resume.json")
# YAML keys that leave the trained weights as they are (where things go, what is logged or validated, speed-only
# switches); every other key of the YAML, and the base checkpoint and data files, must match to resume.
NOT_TRAINING = ("out_dir", "resume", "logger_name", "eval", "train.save_interval", "train.log_interval",
                "data.init_args.num_workers", "engine.prefetch", "engine.fast_save")
STEP = re.compile(r"^step-(\d+)$")


def step_of(folder: Path) -> int:
    return int(STEP.match(Path(folder).name).group(1))


def step_folders(out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    return sorted((p for p in out_dir.iterdir() if STEP.match(p.name) and p.is_dir()), key=step_of)


def is_complete(folder: Path) -> bool:
    folder = Path(folder)
    if (folder / "resume.json").is_file():
        return True
    return (folder / "prompt_style.yaml").is_file() and (folder / "lit_model.pth").is_file()


def latest(out_dir: Path) -> Path | None:
    whole = [f for f in step_folders(out_dir) if is_complete(f)]
    return whole[-1] if whole else None


def _drop(d: dict, dotted: str) -> None:
    *path, last = dotted.split(".")
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
        if d is None:
            return
    if isinstance(d, dict):
        d.pop(last, None)


def _inputs(cfg: dict) -> dict:
    """The base checkpoint by size and time (hashing 13 GB is too slow), the data files by content."""
    out = {}
    weights = Path(str(cfg.get("checkpoint_dir", ""))) / "lit_model.pth"
    if weights.is_file():
        st = weights.stat()
        out["checkpoint"] = {"size": st.st_size, "mtime": int(st.st_mtime)}
    json_path = ((cfg.get("data") or {}).get("init_args") or {}).get("json_path") if isinstance(cfg.get("data"), dict) else None
    if json_path:
        path = Path(str(json_path))
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        out["data"] = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}
    return out


def training_settings(cfg: dict) -> dict:
    """What a resumable state must have been trained with: the YAML less NOT_TRAINING, plus its input files."""
    cfg = copy.deepcopy(cfg)
    inputs = _inputs(cfg)
    for key in NOT_TRAINING:
        _drop(cfg, key)
    return json.loads(json.dumps({"yaml": cfg, "inputs": inputs}, default=str))  # a plain, comparable value


def read_yaml(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text()) or {}


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """`key: old -> new` for every leaf that differs."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a} -> {b}")
    return out


def remove_steps(out_dir: Path, keep: Path | None = None) -> None:
    for folder in step_folders(out_dir):
        if keep is None or folder != keep:
            shutil.rmtree(folder, ignore_errors=True)


def prepare(out_dir: Path, config_path: Path, log=print) -> Path | None:
    """Before a run: keep only the whole step folders made with this YAML's training settings, record the settings
    and return the newest folder (the engine's `resume: auto` picks the same one), or None to start over."""
    out_dir = Path(out_dir)
    settings = training_settings(read_yaml(config_path))
    saved_file = out_dir / SETTINGS_FILE
    saved = json.loads(saved_file.read_text()) if saved_file.is_file() else None
    folders = step_folders(out_dir)
    if folders and saved != settings:
        why = ("; ".join(differences(saved, settings)[:8]) if saved is not None
               else f"no {SETTINGS_FILE} records what they were trained with")
        log(f"resume: starting over, the step checkpoints in {out_dir} were made with other training settings ({why})")
        remove_steps(out_dir)
    for folder in step_folders(out_dir):
        if not is_complete(folder):
            log(f"resume: ignoring and removing the half-written {folder} (a kill during its save)")
            shutil.rmtree(folder, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(saved_file, settings)
    found = latest(out_dir)
    log(f"resume: from step {step_of(found)} ({found})" if found else "resume: no step checkpoint, from the start")
    return found


def discard(out_dir: Path) -> None:
    """After a successful run, or when resuming is off: the step folders, their settings and the attempts go."""
    remove_steps(out_dir)
    (Path(out_dir) / SETTINGS_FILE).unlink(missing_ok=True)
    (Path(out_dir) / HISTORY_FILE).unlink(missing_ok=True)


def pruner(out_dir: Path, log=print):
    """A stdout watcher: when a run starts a new save, the whole folders older than the newest whole one go, so at
    most two step checkpoints (the newest whole one and the one being written) are on disk at any time."""

    def on_line(line: str) -> None:
        if "Saving checkpoint to" in line:
            newest = latest(out_dir)
            for folder in step_folders(out_dir):
                if newest is not None and step_of(folder) < step_of(newest) and is_complete(folder):
                    shutil.rmtree(folder, ignore_errors=True)
                    log(f"resume: removed {folder.name}, older than {newest.name}")

    return on_line


def enabled(settings: FinetuneSettings, config_path: Path, log=print) -> bool:
    """Whether this experiment's run resumes: the YAML's `resume:` (finetune.resume), which the YAML of stock
    litgpt finetune_lora cannot have."""
    if settings.resume in (False, "false"):
        return False
    if read_yaml(config_path).get("resume") in (None, False):
        method = settings.method
        engine = registry.of(settings)
        log(f"resume: {engine.title(method)} ({engine.release}) has no resume argument: a killed {method} fine-tune"
            f" starts over from its first step")
        return False
    return True
