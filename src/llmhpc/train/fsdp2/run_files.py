"""The files stock `litgpt finetune_full`/`finetune_lora` writes beside its weights and logs, written without
Lightning: the CSV log (logs/csv/version_N/metrics.csv, as Lightning's CSVLogger writes it), and in final/ the
model and tokenizer files, prompt_style.yaml and hyperparameters.yaml.

Stock writes hyperparameters.yaml with jsonargparse over its `setup` function's signature (litgpt/parser_config.py,
which imports litgpt.utils and with it Lightning). `hyperparameters` gives the same mapping: `setup`'s parameters
in their order, each the YAML's value or setup's default (a section's missing keys from setup's default instance),
nulls left out. setup's signature is read from LitGPT's source (its module imports Lightning), its defaults
evaluated with LitGPT's own argument classes. Tests compare the files with stock's.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import os
import shutil
import sys
from pathlib import Path

import torch
import yaml

from llmhpc import atomic

CONFIG_FILES = ("config.json", "generation_config.json", "model_config.yaml",
                "tokenizer.json", "tokenizer.model", "tokenizer_config.json")
SECTIONS = ("train", "eval", "log")


def side_files(run, final_dir: Path) -> None:
    """Stock's companions of lit_model.pth: config and tokenizer files, prompt style, hyperparameters."""
    from litgpt.prompts import save_prompt_style

    final_dir.mkdir(parents=True, exist_ok=True)
    copy_config_files(Path(run.checkpoint_dir), final_dir)
    save_prompt_style(run.data.prompt_style, final_dir)
    atomic.write_text(final_dir / "hyperparameters.yaml", yaml.safe_dump(hyperparameters(run.litgpt_yaml),
                                                                         sort_keys=False))


def copy_config_files(source_dir: Path, out_dir: Path) -> None:
    for name in CONFIG_FILES:
        if (source_dir / name).exists():
            shutil.copy(source_dir / name, out_dir)


def hyperparameters(litgpt_yaml: dict) -> dict:
    """What stock's hyperparameters.yaml holds for this YAML: finetune_lora's setup where the YAML has lora_* keys
    (the engine's adapter methods read those), finetune_full's otherwise."""
    script = "lora" if any(key.startswith("lora_") for key in litgpt_yaml) else "full"
    out = {}
    for name, default in setup_parameters(script):
        value = litgpt_yaml.get(name, default)
        if name in SECTIONS and dataclasses.is_dataclass(default):
            value = {**dataclasses.asdict(default), **(litgpt_yaml.get(name) or {})}
        elif name == "data" and isinstance(value, dict):
            value = data_section(value)
        value = plain(value)
        if value is not None:
            out[name] = value
    return out


def data_section(spec: dict) -> dict:
    """class_path and init_args, the data class's arguments in its field order with their defaults filled in."""
    from llmhpc.train.fsdp2 import json_data

    path = spec["class_path"]
    if path in json_data.CLASS_PATHS:
        cls = json_data.JSON
    else:  # a data module the engine does not know is LitGPT's own (args.instantiate): its class is loaded
        from llmhpc.train.fsdp2.args import data_class

        cls = data_class(path)
    given = spec.get("init_args") or {}
    init_args = {f.name: given.get(f.name, f.default) for f in dataclasses.fields(cls) if f.init
                 and (f.name in given or f.default is not dataclasses.MISSING)}
    return {"class_path": path, "init_args": init_args}


def plain(value):
    """As jsonargparse saves it: paths as text, None left out at every level."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if plain(v) is not None}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def setup_parameters(script: str) -> list[tuple[str, object]]:
    """(name, default) of litgpt/finetune/<script>.py's `setup`, in order, from its source; defaults evaluated
    with litgpt.args's classes and Path (None where a parameter has no default)."""
    from llmhpc import litgpt_core

    litgpt_core.load()
    import litgpt.args

    source = Path(sys.modules["litgpt"].__file__).parent / "finetune" / f"{script}.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    setup = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "setup")
    names = {"Path": Path, **{k: getattr(litgpt.args, k) for k in ("TrainArgs", "EvalArgs", "LogArgs")}}
    args = setup.args.args
    defaults = [None] * (len(args) - len(setup.args.defaults)) + list(setup.args.defaults)
    return [(arg.arg, None if node is None else eval(compile(ast.Expression(node), str(source), "eval"), names))
            for arg, node in zip(args, defaults)]


class MetricsCSV:
    """Lightning's CSVLogger (fabric) as stock uses it: root_dir/name/version_N/metrics.csv (N the next free
    version), one row per logged call with its `step` column set to the step given, the header the sorted union
    of the keys, rows buffered and appended every `flush_every` steps and at `finalize`."""

    def __init__(self, root_dir: Path, name: str = "csv", flush_every: int = 100) -> None:
        folder = Path(root_dir) / name
        versions = [int(p.name[8:]) for p in folder.glob("version_*") if p.is_dir() and p.name[8:].isdigit()]
        self.log_dir = folder / f"version_{max(versions, default=-1) + 1}"
        self.path = self.log_dir / "metrics.csv"
        self.flush_every = flush_every
        self.rows: list[dict] = []
        self.keys: list[str] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.rows.append({**{k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}, "step": step})
        if (step + 1) % self.flush_every == 0:
            self.save()

    def save(self) -> None:
        if not self.rows:
            return
        new = set().union(*self.rows) - set(self.keys)
        self.keys = sorted([*self.keys, *new])
        self.log_dir.mkdir(parents=True, exist_ok=True)
        exists = self.path.is_file()
        if new and exists:  # a new column: the file is written again under the wider header
            with open(self.path, newline="") as fh:
                self.rows = list(csv.DictReader(fh)) + self.rows
            exists = False
        with open(self.path, "a" if exists else "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.keys)
            if not exists:
                writer.writeheader()
            writer.writerows(self.rows)
        self.rows = []

    def finalize(self, status: str) -> None:
        self.save()
