"""The YAML that `litgpt finetune_full`/`finetune_lora` reads (and the fsdp2 engine, with its `engine:` section), and
what an engine's stdout and CSV logger report. The engines themselves, and their commands: llmhpc.train.registry."""

from __future__ import annotations

import copy
import csv
import re
from pathlib import Path

import yaml

from llmhpc import atomic
from llmhpc.settings import FinetuneSettings
from llmhpc.train import registry

# litgpt finetune_lora's per-weight switches, in its order (lora_query, lora_key, ...).
LORA_TARGETS = ("query", "key", "value", "projection", "mlp", "head")


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def litgpt_config(ft: dict, checkpoint_dir: str, data_dir: str, out_dir: str) -> dict:
    """The LitGPT YAML (as a dict) for finetune settings `ft`: config_hub's layout, our values."""
    s = FinetuneSettings.from_dict(ft)
    engine = registry.of(s)
    cfg = {
        "checkpoint_dir": str(checkpoint_dir),
        "out_dir": str(out_dir),
        "precision": s.precision,
        "devices": s.devices,
        "num_nodes": s.num_nodes,
        "resume": s.resume,  # auto: the newest step checkpoint in out_dir (the stage keeps only usable ones)
        "data": {
            "class_path": "litgpt.data.JSON",
            "init_args": {"json_path": str(data_dir), "mask_prompt": s.mask_prompt, "prompt_style": s.prompt_style,
                          "ignore_index": s.ignore_index, "seed": s.data_seed, "num_workers": s.data_num_workers},
        },
        "train": {
            "save_interval": s.save_interval,
            "log_interval": s.log_interval,
            "global_batch_size": s.global_batch_size,
            "micro_batch_size": s.micro_batch_size,
            "lr_warmup_steps": s.lr_warmup_steps,
            "epochs": s.epochs,
            "max_tokens": None,
            "max_steps": s.max_steps,
            "max_seq_length": s.max_seq_length,
            "tie_embeddings": None,
            "max_norm": s.max_norm,
            "min_lr": s.min_lr,
        },
        "eval": {"interval": s.eval_interval, "max_new_tokens": s.eval_max_new_tokens, "max_iters": s.eval_max_iters,
                 "initial_validation": s.initial_validation, "final_validation": s.final_validation},
        "logger_name": "csv",
        "seed": s.seed,
        "optimizer": {"class_path": "torch.optim.AdamW",
                      "init_args": {"lr": s.learning_rate, "weight_decay": s.weight_decay, "betas": list(s.betas)}},
    }
    if s.adapters:  # lora, dora, qlora: finetune_lora's keys (the fsdp2 engine reads the same ones)
        if not engine.resumes_adapters:
            del cfg["resume"]  # finetune_lora has no resume argument
        cfg.update({"lora_r": s.lora_r, "lora_alpha": s.lora_alpha, "lora_dropout": s.lora_dropout})
        cfg.update({f"lora_{t}": t in s.lora_targets for t in LORA_TARGETS})
    if engine.own_options:  # its switches, and the two that come from finetune keys (stock litgpt has no section)
        cfg["engine"] = engine.options(s)
    return deep_merge(cfg, dict(s.extra))


def write_litgpt_config(path: Path, ft: dict, checkpoint_dir, data_dir, out_dir, experiment: str) -> None:
    cfg = litgpt_config(ft, checkpoint_dir, data_dir, out_dir)
    layout = "lora" if ft["method"] != "full" else "full"
    header = (f"# LitGPT {ft['method']} fine-tune config for experiment '{experiment}', written by the workflow from"
              f" config/ (layout of litgpt config_hub/finetune/*/{layout}.yaml).\n"
              f"# Run: {registry.of(ft).run_line(ft['method'], path)}\n")
    atomic.write_text(path, header + yaml.safe_dump(cfg, sort_keys=False))


# Lines of litgpt's stdout that end a phase (its performance report follows training at once, the final
# validation's line comes right before the final save); litgpt prints no times of its own for these phases.
PHASE_MARKS = {"train_end": "| Token Counts", "final_val_end": "Final evaluation |",
               # litgpt's setup prints its arguments (pprint of a dict: sorted keys) once its imports are done
               "setup_start": "{'access_token'"}


_REPORT = {
    "training_time_s": r"Training Time\s*:\s*([\d.]+)\s*s",
    "tokens_per_s": r"Tok/sec\s*:\s*([\d.]+)",
    "peak_memory_gb": r"Memory Used\s*:\s*([\d.]+)\s*GB",
    "input_tokens": r"Input Tokens\s*:\s*(\d+)",
    "tokens_with_prompt": r"Tokens w/ Prompt\s*:\s*(\d+)",
    "tokens_with_padding": r"Total Tokens \(w/ Padding\)\s*:\s*(\d+)",
    "trainable_parameters": r"Number of trainable parameters:\s*([\d,]+)",
    "non_trainable_parameters": r"Number of non-trainable parameters:\s*([\d,]+)",
    "final_val_loss": r"Final evaluation \| val loss: ([\d.]+)",
    # the fsdp2 engine's own line (llmhpc.train.memory's estimate for the rows it runs); stock prints none
    "predicted_memory_gb": r"Predicted peak memory per GPU:\s*([\d.]+)\s*GB",
}


def parse_stdout(text: str) -> dict:
    out = {}
    for key, pattern in _REPORT.items():
        found = re.findall(pattern, text)
        if found:
            value = found[-1].replace(",", "")
            out[key] = float(value) if "." in value else int(value)
    return out


def read_metrics_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(fh)]


def find_metrics_csv(out_dir: Path) -> Path | None:
    found = sorted(Path(out_dir).glob("logs/csv/version_*/metrics.csv"))
    return found[-1] if found else None
