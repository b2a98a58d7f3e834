"""The summary stage: one long table (run, experiment, stage, metric, value, unit, source) over every
experiment and stage, so that plots, slides and the report read one file and every number names its source."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from llmhpc.outputs.summary_table import COLUMNS, PHASES

FINETUNE_METRICS = {
    "training_time_s": "s", "stage_wall_s": "s", "job_wall_s": "s", "load_s": "s", "save_s": "s",
    "tokens_per_s": "tokens/s", "tokens_per_s_per_device": "tokens/s", "samples_per_s": "samples/s",
    # what samples/s counts (llmhpc.train.metrics.trained_samples): the training set's records, and the samples the
    # whole run trained (records x epochs, or max_steps x a step's samples)
    "train_records": "count", "trained_samples": "samples",
    "peak_memory_gb": "GB", "predicted_memory_gb": "GB", "peak_host_memory_gb": "GB", "mfu": "fraction",
    "peak_tflops_per_device": "TFLOP/s",
    "steps": "count", "iters": "count", "final_loss": "nats", "final_val_loss": "nats",
    "tokens_with_padding": "tokens", "input_tokens": "tokens", "trainable_parameters": "count",
    "world_size": "count", "micro_batch_size": "samples", "global_batch_size": "samples", "max_seq_length": "tokens",
    # cost in the site's service units (llmhpc.cluster.cost), where the site has rates: measured (stage wall time)
    # and estimated (requested walltime, as results/jobs/cost_estimate.json records it), the queue's rate per
    # resource-hour and the resources charged
    "su": "SU", "su_estimate": "SU", "su_rate": "SU/h", "su_units": "resources",
    # the stock engine's step-checkpoint interval in a scheduler job (llmhpc.train.stock_save_interval), and the step time
    # it was derived from
    "save_interval": "steps", "save_interval_step_s": "s",
    # a run killed and resumed (llmhpc.train.attempts): the step its last attempt resumed from, its attempts, the
    # training time lost after each killed attempt's last checkpoint, and the last attempt's own training time (the
    # figures above are over every attempt)
    "resumed_from_step": "count", "attempts": "count", "lost_time_s": "s", "last_attempt_training_time_s": "s",
}
# Where a job's wall went (start-up, load, warm-up, work, save, exit), as the fine-tune and evaluate stages record
# them; the time-breakdown plot and slide draw these. Only where present: a phase not known is never a guessed 0.
PHASE_METRICS = {f"phase_{p}_s": "s" for p in PHASES}
FINETUNE_METRICS.update(PHASE_METRICS)
# What ran, as text: engine, method and float8 where the run recorded them, and the queue and resource its cost was
# charged on; attention for every fine-tune, empty where the engine did not print its backend (stock litgpt), so
# that the column is there and never guessed.
FINETUNE_TEXT = ("device", "precision", "engine", "method", "float8", "su_queue", "su_resource", "save_interval_source")
INFER_METRICS = {"acc": "fraction", "acc_norm": "fraction", "items": "count", "wall_s": "s", "load_s": "s",
                 "score_s": "s", "items_per_s": "items/s", "bos_prepended": "bool"}
# An evaluation job's stage wall time, its phases and, where the site has rates, its cost, as a fine-tune's (only
# where present: never a guessed 0 SU).
EVAL_COST_METRICS = {"stage_wall_s": "s", "job_wall_s": "s", "su": "SU", "su_estimate": "SU", "su_rate": "SU/h",
                     "su_units": "resources", **PHASE_METRICS}
EVAL_COST_TEXT = ("su_queue", "su_resource")
# Which scorer made an evaluation's numbers, in what precision and whether in float8 (evaluate.float8), so that the
# deck and the bundle can say so.
EVAL_TEXT = ("scorer", "precision", "float8")
SERVE_METRICS = {"p50_latency_s": "s", "p99_latency_s": "s", "requests_per_s": "requests/s", "tokens_per_s": "tokens/s",
                 "completed": "count", "concurrency": "count", "load_new_tokens": "tokens", "peak_batch": "count",
                 "greedy_matches": "count", "greedy_checked": "count", "startup_s": "s"}
ENV_FIELDS = ["python", "torch", "litgpt", "cuda", "gpu_model", "host", "git_commit"]


def _read(path) -> dict:
    return json.loads(Path(path).read_text())


def build(run_name: str, experiments: list[str], manifest, finetune: dict, evaluate: dict, data: dict,
          serve: dict | None = None) -> pd.DataFrame:
    """data: {"train": train.json, "val": val.json, "eval": hellaswag.jsonl}; serve: {experiment: serve_check's
    metrics.json} for the experiments it checked (none without serve.enabled)."""
    rows = []

    def add(experiment, stage, metric, value, unit, source):
        rows.append([run_name, experiment, stage, metric, value, unit, str(source)])

    env = _read(manifest)
    for field in ENV_FIELDS:
        add("all", "env", field, env.get(field), "text", manifest)

    add("all", "data", "train_records", len(_read(data["train"])), "count", data["train"])
    add("all", "data", "val_records", len(_read(data["val"])), "count", data["val"])
    items = sum(1 for line in Path(data["eval"]).read_text().splitlines() if line.strip())
    add("all", "data", "eval_items", items, "count", data["eval"])

    for name in experiments:
        ft = _read(finetune[name])
        for metric, unit in FINETUNE_METRICS.items():
            if ft.get(metric) is not None:
                add(name, "finetune", metric, ft[metric], unit, finetune[name])
        for field in FINETUNE_TEXT:
            if field in ft:
                add(name, "finetune", field, ft[field], "text", finetune[name])
        add(name, "finetune", "attention", ft.get("attention"), "text", finetune[name])

    for name, path in evaluate.items():
        scores = _read(path)
        for metric, unit in INFER_METRICS.items():
            add(name, "evaluate", metric, scores[metric], unit, path)
        for metric, unit in EVAL_COST_METRICS.items():
            if scores.get(metric) is not None:
                add(name, "evaluate", metric, scores[metric], unit, path)
        for field in EVAL_TEXT + EVAL_COST_TEXT:
            if field in scores:
                add(name, "evaluate", field, scores[field], "text", path)

    for name, path in (serve or {}).items():
        figures = _read(path)
        for metric, unit in SERVE_METRICS.items():
            if figures.get(metric) is not None:
                add(name, "serve", metric, figures[metric], unit, path)

    # Ratios against the first experiment, the baseline: the figure competitions score.
    base = experiments[0]
    b = _read(finetune[base])
    for name in experiments:
        d = _read(finetune[name])
        if b.get("training_time_s") and d.get("training_time_s"):
            add(name, "finetune", f"speedup_vs_{base}", round(b["training_time_s"] / d["training_time_s"], 4),
                "ratio", f"{finetune[base]} {finetune[name]}")
        a0, a1 = _read(evaluate["base"]), _read(evaluate[name])
        add(name, "evaluate", "acc_gain_vs_base", round(a1["acc"] - a0["acc"], 4), "fraction",
            f"{evaluate['base']} {evaluate[name]}")
    return pd.DataFrame(rows, columns=COLUMNS)
