"""The finetune stage: write the LitGPT YAML for an experiment, run `litgpt finetune_full` (or `finetune_lora`)
on it, and summarise the run from litgpt's own stdout and metrics.csv."""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

# Dense peak TFLOP/s of one device, by GPU name fragment and precision class ("16" = bf16/fp16 tensor cores,
# "32" = fp32 without TF32). H100/H200: measured on the device machine (a large bf16 matrix product, see
# REFERENCE.md); the others: vendor datasheets. MFU is reported only where the device is found here.
PEAK_TFLOPS = {
    "H200": {"16": 790.0, "32": 67.0},
    "H100": {"16": 790.0, "32": 67.0},
    "A100": {"16": 312.0, "32": 19.5},
    "V100": {"16": 125.0, "32": 15.7},
}


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
    cfg = {
        "checkpoint_dir": str(checkpoint_dir),
        "out_dir": str(out_dir),
        "precision": ft["precision"],
        "devices": ft["devices"],
        "num_nodes": ft["num_nodes"],
        "resume": False,
        "data": {
            "class_path": "litgpt.data.JSON",
            "init_args": {"json_path": str(data_dir), "mask_prompt": False, "prompt_style": "alpaca",
                          "ignore_index": -100, "seed": 42, "num_workers": 4},
        },
        "train": {
            "save_interval": 1_000_000,  # only the final checkpoint: step saves hold optimizer state (tens of GB at 7B)
            "log_interval": 1,
            "global_batch_size": ft["global_batch_size"],
            "micro_batch_size": ft["micro_batch_size"],
            "lr_warmup_steps": ft["lr_warmup_steps"],
            "epochs": ft["epochs"],
            "max_tokens": None,
            "max_steps": ft["max_steps"],
            "max_seq_length": ft["max_seq_length"],
            "tie_embeddings": None,
            "max_norm": None,
            "min_lr": ft["min_lr"],
        },
        "eval": {"interval": 25, "max_new_tokens": 100, "max_iters": 100, "initial_validation": False,
                 "final_validation": True},
        "logger_name": "csv",
        "seed": ft["seed"],
        "optimizer": {"class_path": "torch.optim.AdamW",
                      "init_args": {"lr": ft["learning_rate"], "weight_decay": ft["weight_decay"],
                                    "betas": [0.9, 0.95]}},
    }
    if ft["method"] == "lora":
        del cfg["resume"]  # finetune_lora has no resume argument
        cfg.update({"lora_r": ft["lora_r"], "lora_alpha": ft["lora_alpha"], "lora_dropout": 0.05,
                    "lora_query": True, "lora_key": False, "lora_value": True, "lora_projection": False,
                    "lora_mlp": False, "lora_head": False})
    return deep_merge(cfg, ft.get("extra") or {})


def write_litgpt_config(path: Path, ft: dict, checkpoint_dir, data_dir, out_dir, experiment: str) -> None:
    cfg = litgpt_config(ft, checkpoint_dir, data_dir, out_dir)
    header = (f"# LitGPT {ft['method']} fine-tune config for experiment '{experiment}', written by the workflow from"
              f" config/ (layout of litgpt config_hub/finetune/*/full.yaml).\n"
              f"# Run: litgpt finetune_{ft['method']} --config {path}\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(header + yaml.safe_dump(cfg, sort_keys=False))


def command(method: str, config_path: Path, launcher: list[str] | None = None) -> list[str]:
    """`litgpt finetune_<method> --config ...` via this Python, behind an optional launcher (mpirun, srun)."""
    return [*(launcher or []), sys.executable, "-m", "litgpt", f"finetune_{method}", "--config", str(config_path)]


# Lines of litgpt's stdout that end a phase (its performance report follows training at once, the final
# validation's line comes right before the final save); litgpt prints no times of its own for these phases.
PHASE_MARKS = {"train_end": "| Token Counts", "final_val_end": "Final evaluation |"}


def run(cmd: list[str], stdout_path: Path, log=print, marks: dict | None = None) -> tuple[int, float, float]:
    """Run cmd with its whole output teed into stdout_path; return (exit code, wall s, peak child RSS GB).
    A `marks` dict receives the wall-clock times of the start, the end and the first line of each PHASE_MARKS."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", JSONARGPARSE_DEPRECATION_WARNINGS="off")
    log("running: " + " ".join(cmd))
    marks = {} if marks is None else marks
    marks["start"] = time.time()
    t0 = time.perf_counter()
    with open(stdout_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in proc.stdout:
            out.write(line)
            out.flush()
            for name, text in PHASE_MARKS.items():  # `in`, not startswith: launchers may prefix rank tags
                if name not in marks and text in line:
                    marks[name] = time.time()
        code = proc.wait()
    wall = time.perf_counter() - t0
    marks["end"] = time.time()
    peak_rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    return code, wall, peak_rss_gb


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


def phase_times(marks: dict, training_time_s: float | None, final_dir: Path) -> dict:
    """load_s: launch to start of training (start-up, data, model, checkpoint) = arrival of litgpt's
    performance report minus its training time. save_s: end of the final validation (or of training) to the
    last file written into out/final. None where a mark is missing or the clocks disagree (a negative span)."""
    times = {"load_s": None, "save_s": None}
    if "start" in marks and "train_end" in marks and training_time_s is not None:
        load = marks["train_end"] - marks["start"] - training_time_s
        times["load_s"] = round(load, 3) if load >= 0 else None
    save_start = marks.get("final_val_end", marks.get("train_end"))
    written = [p.stat().st_mtime for p in Path(final_dir).glob("*") if p.is_file()] if Path(final_dir).is_dir() else []
    if save_start is not None and written:
        save = max(written) - save_start
        times["save_s"] = round(save, 3) if save >= 0 else None
    return times


def find_metrics_csv(out_dir: Path) -> Path | None:
    found = sorted(Path(out_dir).glob("logs/csv/version_*/metrics.csv"))
    return found[-1] if found else None


def peak_tflops(gpu_name: str | None, precision: str, override: float | None) -> float | None:
    if override:
        return override
    if not gpu_name:
        return None
    cls = "32" if precision.startswith("32") else "16"
    for key, peaks in PEAK_TFLOPS.items():
        if key in gpu_name:
            return peaks[cls]
    return None


def flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: float) -> float:
    """Training FLOPs per token: 6 N for the weights (forward + backward) plus 12 L d T for attention scores."""
    return 6 * n_params + 12 * n_layer * n_embd * seq_len


def summarise(stdout_text: str, metrics_rows: list[dict], ft: dict, wall_s: float, exit_code: int,
              model_config: dict, gpu_name: str | None, peak_override: float | None, peak_rss_gb: float) -> dict:
    rep = parse_stdout(stdout_text)
    world = ft["devices"] * ft["num_nodes"]
    accumulation = max(1, ft["global_batch_size"] // world // ft["micro_batch_size"])
    train_rows = [r for r in metrics_rows if r.get("loss") is not None]
    val_rows = [r for r in metrics_rows if r.get("val_loss") is not None]
    summary = {
        "exit_code": exit_code,
        "method": ft["method"],
        "precision": ft["precision"],
        "devices": ft["devices"],
        "num_nodes": ft["num_nodes"],
        "world_size": world,
        "global_batch_size": ft["global_batch_size"],
        "micro_batch_size": ft["micro_batch_size"],
        "stage_wall_s": round(wall_s, 3),
        "training_time_s": rep.get("training_time_s"),
        "tokens_per_s": rep.get("tokens_per_s"),
        "tokens_per_s_per_device": round(rep["tokens_per_s"] / world, 2) if "tokens_per_s" in rep else None,
        "peak_memory_gb": rep.get("peak_memory_gb"),
        "peak_host_memory_gb": round(peak_rss_gb, 3),
        "input_tokens": rep.get("input_tokens"),
        "tokens_with_padding": rep.get("tokens_with_padding"),
        "trainable_parameters": rep.get("trainable_parameters"),
        # every parameter of the model: litgpt reports the trainable and (LoRA) the frozen ones
        "parameters": (rep["trainable_parameters"] + rep.get("non_trainable_parameters", 0)
                       if "trainable_parameters" in rep else None),
        "iters": int(max(r["iter"] for r in train_rows)) if train_rows else None,
        # litgpt logs its optimizer step count as "step", but Lightning's CSV logger overwrites that column
        # with the logging step (the iteration), so optimizer steps come from the accumulation arithmetic
        "steps": int(max(r["iter"] for r in train_rows)) // accumulation if train_rows else None,
        "final_loss": train_rows[-1]["loss"] if train_rows else None,
        "final_val_loss": rep.get("final_val_loss", val_rows[-1]["val_loss"] if val_rows else None),
        "device": gpu_name or "cpu",
        "mfu": None,
        "peak_tflops_per_device": None,
    }
    peak = peak_tflops(gpu_name, ft["precision"], peak_override)
    n_params = summary["parameters"]
    if peak and n_params and summary["tokens_per_s"] and summary["iters"] and summary["tokens_with_padding"]:
        sequences = summary["iters"] * ft["micro_batch_size"] * world
        seq_len = summary["tokens_with_padding"] / sequences
        achieved = flops_per_token(n_params, model_config["n_layer"], model_config["n_embd"], seq_len)
        achieved *= summary["tokens_per_s"] / world / 1e12
        summary["mfu"] = round(achieved / peak, 4)
        summary["peak_tflops_per_device"] = peak
    return summary


def model_facts(checkpoint_dir: Path) -> dict:
    """Shape of the checkpoint's architecture, from its model_config.yaml (no litgpt import: that costs the job
    seconds, 12 s on a 2-core node). The parameter count comes from litgpt's own report (see summarise)."""
    config = yaml.safe_load((Path(checkpoint_dir) / "model_config.yaml").read_text())
    return {"n_layer": config["n_layer"], "n_embd": config["n_embd"], "name": config.get("name")}


def gpu_name() -> str | None:
    """Name of this job's first GPU from nvidia-smi (no CUDA context in this process: litgpt's own
    processes hold the GPUs); None without NVIDIA GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    if visible in ("", "-1"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", visible or "0"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    name = out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else ""
    return name or None


def write_json(path: Path, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def run_stage(config_path, checkpoint_dir, out_dir, stdout_path, metrics_path, summary_path, settings: dict,
              peak_override: float | None, threads: int, launch: dict | None = None, log=print) -> dict:
    """Run the fine-tune of one experiment and write its stdout, metrics.csv and summary JSON. `launch` is
    llmhpc.cluster.launch.plan's answer (its command prefix starts the processes; the whole plan is recorded in the
    summary). A failed fine-tune still leaves its stdout, then raises."""
    import shutil

    out_dir = Path(out_dir)
    if out_dir.exists():  # litgpt would otherwise add logs/csv/version_1 beside a stale version_0
        shutil.rmtree(out_dir)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    cmd = command(settings["method"], config_path, (launch or {}).get("prefix"))
    marks = {}
    code, wall, peak_rss = run(cmd, Path(stdout_path), log, marks)
    text = Path(stdout_path).read_text(encoding="utf-8", errors="replace")
    if code != 0:
        tail = "\n".join(text.splitlines()[-30:])
        raise RuntimeError(f"litgpt finetune_{settings['method']} exited with {code}; last lines of"
                           f" {stdout_path}:\n{tail}")
    csv_path = find_metrics_csv(out_dir)
    if csv_path is None:
        raise RuntimeError(f"litgpt wrote no metrics.csv under {out_dir}/logs/csv")
    shutil.copyfile(csv_path, metrics_path)
    summary = summarise(text, read_metrics_csv(csv_path), settings, wall, code,
                        model_facts(checkpoint_dir), gpu_name(), peak_override, peak_rss)
    summary.update(phase_times(marks, summary["training_time_s"], out_dir / "final"))
    summary["command"] = " ".join(cmd)
    if launch is not None:
        summary["launch"] = launch  # launcher, command prefix, environment, hosts, scheduler job id
    write_json(summary_path, summary)
    log(json.dumps(summary, indent=1))
    return summary
