"""The evaluate stage: score a LitGPT checkpoint on HellaSwag and write predictions and metrics, with the scorer
`evaluate.scorer` names (llmhpc.eval.registry: the reference, lm-evaluation-harness's loop, or the fast one, one
process or one per GPU). run_stage adds the job's stage wall time and, on a site with charge rates, its measured
cost in service units to the metrics, as the fine-tune's summary has them."""

from __future__ import annotations

import time

from llmhpc import atomic
from llmhpc.eval.registry import SCORERS, ScoringJob
from llmhpc.settings import EvaluateSettings


def run(settings: dict, checkpoint_dir, eval_file, predictions_path, metrics_path, log=print,
        launch: dict | None = None) -> dict:
    """Score with the scorer `settings` (the evaluate section, llmhpc.settings.EvaluateSettings) names. `launch`:
    llmhpc.cluster.launch.plan's answer for a scorer over several nodes (its prefix starts the processes)."""
    s = EvaluateSettings.from_dict(settings)
    job = ScoringJob(checkpoint_dir, eval_file, predictions_path, metrics_path)
    return SCORERS[s.scorer].run(s, job, launch=launch, log=log)


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
