"""A fine-tune's summary, whichever engine ran it: times, throughput per device, memory, MFU against the
device's peak."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import yaml

from llmhpc.settings import FinetuneSettings
from llmhpc.train.litgpt import parse_stdout

# Dense peak TFLOP/s of one device, by GPU name fragment and precision class ("16" = bf16/fp16 tensor cores,
# "32" = fp32 without TF32). H100/H200: measured on the device machine (a large bf16 matrix product, see
# docs/bench-finetune.md); the others: vendor datasheets. MFU is reported only where the device is found here.
PEAK_TFLOPS = {
    "H200": {"16": 790.0, "32": 67.0},
    "H100": {"16": 790.0, "32": 67.0},
    "A100": {"16": 312.0, "32": 19.5},
    "V100": {"16": 125.0, "32": 15.7},
}


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


ENGINE_PHASES = re.compile(r"Engine phases \(s\): (\{.*\})")  # the fsdp2 engine's line (engine.PHASES_LINE)
PHASES = ("startup", "load", "warmup", "work", "save")


def job_phases(stdout_text: str, marks: dict, training_time_s: float | None, final_dir: Path,
               stage_wall_s: float, before_s: float = 0.0) -> dict:
    """The job's wall in phases, flat keys phase_<name>_s (the slides' time-breakdown plot): startup (the job
    process's start to the engine's last import: the stage's own interpreter and set-up, `before_s` of it, then the
    launcher's, the engine's interpreter and imports), load (model, weights and data on the device), warmup
    (compile and warm-up passes), work (the training loop), save (final validation, checkpoint, side files) and
    exit (the job's wall, `before_s` + the stage's, less the others). The fsdp2 engine measures its own and prints
    them; for stock litgpt they come from the marks of its stdout (its warm-up is inside its training time: warmup
    null). None where unknown; exit None where another phase but warmup is."""
    found = ENGINE_PHASES.findall(stdout_text)
    if found:
        engine = json.loads(found[-1])
        times = {name: engine.get(f"{name}_s") for name in PHASES}
        if "imported_at" in engine and "start" in marks and engine["imported_at"] >= marks["start"]:
            times["startup"] = engine["imported_at"] - marks["start"]
    else:
        times = stock_phases(marks, training_time_s, final_dir)
    if times["startup"] is not None:
        times["startup"] += before_s
    known = [times[name] for name in PHASES if name != "warmup"]
    wall = stage_wall_s + before_s
    times["exit"] = None if None in known else nonnegative(wall - sum(known) - (times["warmup"] or 0.0))
    return {f"phase_{name}_s": None if value is None else round(value, 3) for name, value in times.items()}


def stock_phases(marks: dict, training_time_s: float | None, final_dir: Path) -> dict:
    """startup: the stage's start to litgpt's first line (its setup prints its arguments once every import is
    done); load: from there to the start of training (the end of training less its time); work: the training
    time; save: the end of training to the last file written into out/final."""
    times = dict.fromkeys(PHASES)
    times["work"] = training_time_s
    if "start" in marks and "setup_start" in marks:
        times["startup"] = nonnegative(marks["setup_start"] - marks["start"])
    if "setup_start" in marks and "train_end" in marks and training_time_s is not None:
        times["load"] = nonnegative(marks["train_end"] - training_time_s - marks["setup_start"])
    written = [p.stat().st_mtime for p in Path(final_dir).glob("*") if p.is_file()] if Path(final_dir).is_dir() else []
    if "train_end" in marks and written:
        times["save"] = nonnegative(max(written) - marks["train_end"])
    return times


def nonnegative(span: float) -> float | None:
    """A span the clocks agree on; None where they do not (a negative span)."""
    return span if span >= 0 else None


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


def flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: float, frozen_base: bool = False) -> float:
    """Training FLOPs per token: 6 N for the weights (forward 2 N, backward 4 N) plus 12 L d T for attention
    scores; 4 N where the base weights are frozen (adapter methods: their backward computes input gradients
    only, no weight gradients, and the adapters' own FLOPs are a fraction of a percent)."""
    return (4 if frozen_base else 6) * n_params + 12 * n_layer * n_embd * seq_len


def summarise(stdout_text: str, metrics_rows: list[dict], ft: FinetuneSettings | dict, wall_s: float, exit_code: int,
              model_config: dict, gpu_name: str | None, peak_override: float | None, peak_rss_gb: float,
              start_iter: int = 0, train_records: int | None = None) -> dict:
    """The run's figures from its stdout and CSV rows; `ft`: the experiment's finetune settings (a dict of them is
    read over the schema's defaults); `start_iter`: the iterations done before this attempt (a resumed run's report
    counts only its own tokens and time; llmhpc.train.attempts adds the earlier attempts'); `train_records`: the
    records of the training set (train_records_of), which samples/s counts (trained_samples)."""
    rep = parse_stdout(stdout_text)
    settings = ft if isinstance(ft, FinetuneSettings) else FinetuneSettings.from_dict(ft)
    world, accumulation = settings.world_size, max(1, settings.accumulation)
    train_rows = [r for r in metrics_rows if r.get("loss") is not None]
    val_rows = [r for r in metrics_rows if r.get("val_loss") is not None]
    summary = {
        "exit_code": exit_code,
        "method": settings.method,
        "engine": settings.engine,
        "float8": settings.float8,
        "attention": attention_backend(stdout_text),
        "compile_decision": compile_decision(stdout_text),
        "precision": settings.precision,
        "devices": settings.devices,
        "num_nodes": settings.num_nodes,
        "world_size": world,
        "global_batch_size": settings.global_batch_size,
        "micro_batch_size": settings.micro_batch_size,
        "max_seq_length": settings.max_seq_length,
        "stage_wall_s": round(wall_s, 3),
        "training_time_s": rep.get("training_time_s"),
        "tokens_per_s": rep.get("tokens_per_s"),
        "tokens_per_s_per_device": round(rep["tokens_per_s"] / world, 2) if "tokens_per_s" in rep else None,
        "peak_memory_gb": rep.get("peak_memory_gb"),
        "predicted_memory_gb": rep.get("predicted_memory_gb"),  # the fsdp2 engine's estimate, beside the measured
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
    summary["train_records"] = train_records
    summary["trained_samples"] = trained_samples(settings, train_records, summary["steps"])
    summary["samples_per_s"] = samples_per_s(summary["trained_samples"], summary["training_time_s"])
    peak = peak_tflops(gpu_name, settings.precision, peak_override)
    n_params = summary["parameters"]
    if peak and n_params and summary["tokens_per_s"] and summary["iters"] and summary["tokens_with_padding"]:
        sequences = max(1, summary["iters"] - start_iter) * settings.micro_batch_size * world
        seq_len = summary["tokens_with_padding"] / sequences
        achieved = flops_per_token(n_params, model_config["n_layer"], model_config["n_embd"], seq_len,
                                   frozen_base=settings.method != "full")
        achieved *= summary["tokens_per_s"] / world / 1e12
        summary["mfu"] = round(achieved / peak, 4)
        summary["peak_tflops_per_device"] = peak
    return summary


def trained_samples(settings: FinetuneSettings, train_records: int | None, steps: int | None = None) -> int | None:
    """The samples the whole run's training loop takes, as Hugging Face Trainer's train_samples_per_second counts
    them (the ISC25 score's numerator): records x epochs for a run that goes through its epochs, max_steps x the
    samples of one step for a run that max_steps stops first (the fewer of the two). Not optimizer steps x the
    global batch: where the records do not fill whole steps that miscounts both ways (232 records, global batch 16:
    micro batch 8 runs 29 micro batches, 14 steps, stock's timed loop running the 29th's 8 samples without a step on
    them, so 14 x 16 = 224; micro batch 16 runs 15 steps, the last of 8 samples, so 15 x 16 = 240; both went through
    232). The same count for every engine (the fsdp2 engine's plan keeps whole steps only, so its own report can
    say fewer: 224 for micro batch 8) and for a run resumed after a kill (a step done again is lost time, not more
    samples). `train_records` unknown: only a run that reached max_steps is counted (`steps`: the run's optimizer
    steps), else None."""
    by_steps = settings.max_steps * settings.samples_per_step if settings.max_steps else None
    if train_records is None:
        return by_steps if by_steps and steps is not None and steps >= settings.max_steps else None
    by_epochs = train_records * settings.epochs
    return by_epochs if by_steps is None else min(by_epochs, by_steps)


def samples_per_s(samples: int | None, training_time_s: float | None) -> float | None:
    """The ISC25 score: the samples trained (trained_samples) / training time."""
    if not samples or not training_time_s:
        return None
    return round(samples / training_time_s, 3)


JSON_DATA = ("litgpt.data.JSON", "litgpt.data.json_data.JSON", "JSON")  # the data module the workflow writes


def train_records_of(litgpt_yaml: dict) -> int | None:
    """The records of the training set that the engine's YAML names (litgpt.data.JSON: json_path's train.json or
    train.jsonl, or a single file less its val_split_fraction, split as torch's random_split sizes it); None for
    another data module or a file that is not there or cannot be read (the run is done: its summary still gets
    written)."""
    from llmhpc.records import load_records

    data = litgpt_yaml.get("data") or {}
    args = data.get("init_args") or {}
    if data.get("class_path") not in JSON_DATA or not args.get("json_path"):
        return None
    path = Path(args["json_path"])
    try:
        if path.is_dir():
            found = [path / f"train{ext}" for ext in (".json", ".jsonl") if (path / f"train{ext}").is_file()]
            return len(load_records(found[0])) if found else None
        if not path.is_file():
            return None
        n = len(load_records(path))
    except (OSError, ValueError):  # DataError is a ValueError
        return None
    val = args.get("val_split_fraction")
    val = 0.05 if val is None else val
    sizes = [int(n * (1.0 - val)), int(n * val)]  # floor of each fraction, the remainder dealt from the first
    for i in range(n - sum(sizes)):
        sizes[i % 2] += 1
    return sizes[0]


# The fsdp2 engine's settings line ("Engine fsdp2 | ... attention=flex ... |") names the attention backend it chose;
# stock litgpt prints none, and then none is recorded (not guessed). A log written before the engine's package was
# renamed from train.fast says "Engine fast |"; a finished run's log is read either way.
_ATTENTION = re.compile(r"Engine (?:fsdp2|fast) \|[^\n]*?\battention=([\w-]+)")  # not anchored: rank tags prefix it


def attention_backend(stdout_text: str) -> str | None:
    found = _ATTENTION.findall(stdout_text)
    return found[-1] if found else None


# The fsdp2 engine's compile choice and its reason (engine.COMPILE_LINE); stock litgpt compiles nothing, says nothing
_COMPILE = re.compile(r"Compile decision: ([^\n]+)")


def compile_decision(stdout_text: str) -> str | None:
    found = _COMPILE.findall(stdout_text)
    return found[-1].strip() if found else None


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
