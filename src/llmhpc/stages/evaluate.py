"""The evaluate stage: score a LitGPT checkpoint on HellaSwag and write predictions and metrics, with the scorer
the settings name: the reference (lm-evaluation-harness's loop, here) or the fast one (llmhpc.eval.run: one
process, or one per GPU under torchrun). run_stage adds the job's stage wall time and, on a site with charge
rates, its measured cost in service units to the metrics, as the fine-tune's summary has them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from llmhpc import atomic
from llmhpc.eval.reference import score_items
from llmhpc.litgpt_checkpoint import load_litgpt, resolve_device


def evaluate(checkpoint_dir: Path, eval_file: Path, predictions_path: Path, metrics_path: Path,
             precision: str, batch_size: int, bos: str, device: str, log=print) -> dict:
    """The reference scorer over the eval file; the metrics record the BOS decision."""
    from llmhpc.eval.loading import resolve_bos

    t0 = time.perf_counter()
    device = resolve_device(device)
    from llmhpc.stages.data import read_hellaswag

    docs = read_hellaswag(eval_file)
    if precision == "auto":
        from llmhpc.litgpt_checkpoint import default_precision

        precision = default_precision(device)
    model, tokenizer = load_litgpt(checkpoint_dir, precision, device)
    t_loaded = time.perf_counter()
    bos_id, bos_why = resolve_bos(tokenizer, checkpoint_dir, str(bos).lower())

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, bos=False).tolist()

    rows = score_items(model, encode, docs, batch_size, bos_id, device)
    t_scored = time.perf_counter()
    Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(predictions_path) as fh:
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
        "scorer": "reference",
        "bos_prepended": bos_id is not None,
        "bos": bos_why,
        "precision": precision,
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "batch_size": batch_size,
    }
    atomic.write_json(metrics_path, metrics)
    log(f"scored {n} items from {eval_file} with {checkpoint_dir}: acc {metrics['acc']:.4f}"
        f" acc_norm {metrics['acc_norm']:.4f} in {metrics['wall_s']} s")
    return metrics


def run(settings: dict, checkpoint_dir, eval_file, predictions_path, metrics_path, log=print,
        launch: dict | None = None) -> dict:
    """Score with the scorer `settings` (the evaluate section, llmhpc.settings.EvaluateSettings) names. `launch`:
    llmhpc.cluster.launch.plan's answer for a scorer over several nodes (its prefix starts the processes)."""
    from llmhpc.settings import EvaluateSettings

    s = EvaluateSettings.from_dict(settings)
    if s.scorer == "reference":
        metrics = evaluate(checkpoint_dir, eval_file, predictions_path, metrics_path, precision=s.precision,
                           batch_size=s.batch_size, bos=s.bos, device=s.device, log=log)
        if s.reference_metrics:
            from llmhpc.eval.guard import check_metrics

            metrics["accuracy_guard"] = check_metrics(metrics, s.reference_metrics, s.tolerance_pt)
            atomic.write_json(metrics_path, metrics)
        return metrics
    args = ["--checkpoint", str(checkpoint_dir), "--eval-file", str(eval_file), "--predictions",
            str(predictions_path), "--metrics", str(metrics_path), "--precision", s.precision, "--bos", str(s.bos),
            "--device", s.device, "--token-budget", str(s.token_budget), "--pipeline-stages", str(s.pipeline_stages),
            "--tolerance-pt", str(s.tolerance_pt), "--compile", str(s.compile)]
    args += ["--reference-metrics", s.reference_metrics] if s.reference_metrics else []
    if s.processes == 1:
        from llmhpc.eval.run import score_file

        return score_file(checkpoint_dir, eval_file, predictions_path, metrics_path, precision=s.precision,
                          bos=str(s.bos), device=s.device, token_budget=s.token_budget,
                          pipeline_stages=s.pipeline_stages, reference_metrics=s.reference_metrics,
                          tolerance_pt=s.tolerance_pt, compile=str(s.compile), quiet=False)
    import subprocess
    import sys

    if s.num_nodes > 1:  # the site's launcher, as the fine-tune's (mpirun, srun, or one torchrun per node)
        cmd = [*(launch or {})["prefix"], sys.executable, "-m", "llmhpc.eval.run", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={s.processes}",
               "-m", "llmhpc.eval.run", *args]
    log("running: " + " ".join(cmd))
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise RuntimeError(f"the fast scorer exited with {proc.returncode} (its output is above in this log)")
    return json.loads(Path(metrics_path).read_text())


def run_stage(settings: dict, checkpoint_dir, eval_file, predictions_path, metrics_path, log=print,
              cost_of=None, launch: dict | None = None) -> dict:
    """`run`, then the stage's wall time (stage_wall_s) and `cost_of(stage wall s)`, the job's measured cost in
    service units (llmhpc.cluster.cost.measured: su, su_estimate, su_queue, ...; empty where the site has no rates),
    added to the metrics file the scorer wrote."""
    t0 = time.perf_counter()
    metrics = dict(run(settings, checkpoint_dir, eval_file, predictions_path, metrics_path, log, launch=launch))
    wall = time.perf_counter() - t0
    metrics["stage_wall_s"] = round(wall, 3)
    if cost_of is not None:
        metrics.update(cost_of(metrics["stage_wall_s"]))
    atomic.write_json(metrics_path, metrics)
    if metrics.get("su") is not None:
        log(f"measured cost: {metrics['su']:g} SU ({metrics['su_queue']}, {metrics['su_rate']:g} SU/h x"
            f" {metrics['su_units']:g} {metrics['su_resource']} x {wall / 3600:.4f} h)")
    return metrics
