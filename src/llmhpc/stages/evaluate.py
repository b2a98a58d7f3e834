"""The evaluate stage: score a LitGPT checkpoint on HellaSwag and write predictions and metrics, with the scorer
`evaluate.scorer` names (llmhpc.eval.registry: the reference, lm-evaluation-harness's loop, or the fast one, one
process or one per GPU). run_stage adds the job's stage wall time, its phases (phase_startup_s ... phase_exit_s,
as the fine-tune's summary has them) and, on a site with charge rates, its measured cost in service units to the
metrics."""

from __future__ import annotations

import time

from llmhpc import atomic
from llmhpc.clock import process_age
from llmhpc.eval.registry import SCORERS, ScoringJob
from llmhpc.settings import EvaluateSettings


def run(settings: dict | EvaluateSettings, checkpoint_dir, eval_file, predictions_path, metrics_path, log=print,
        launch: dict | None = None) -> dict:
    """Score with the scorer `settings` (the evaluate section, or llmhpc.settings.EvaluateSettings made from it)
    names. `launch`: llmhpc.cluster.launch.plan's answer for a scorer over several nodes (its prefix starts the
    processes)."""
    s = settings if isinstance(settings, EvaluateSettings) else EvaluateSettings.from_dict(settings)
    job = ScoringJob(checkpoint_dir, eval_file, predictions_path, metrics_path)
    return SCORERS[s.scorer].run(s, job, launch=launch, log=log)


def phases(metrics: dict, wall: float, age_at_start: float | None, in_process: bool) -> dict:
    """The job's phases in seconds, over `wall`: the job's (this process's start to the scorer's metrics written
    back), or the stage's (run_stage's start) where the process's start is unknown. Start-up (python start,
    imports, reading the items: up to the model's load), load, warm-up (the compile warm-up the job waited for; the
    rest of it overlaps load and scoring), work (scoring), save (writing the predictions and metrics) and exit (the
    rest of the wall: the scorer's processes ending, where it started any). `age_at_start`: this process's age where
    `wall` begins (0 for the job's wall), from which the scorer's own start-up figures count when it runs in this
    process. A scorer that records no start-up (the reference) has it as what ran before its load, the rest of the
    scorer's time."""
    given = metrics.get("phases_s") or {}
    load = given.get("load_s", metrics.get("load_s")) or 0.0
    work = given.get("score_s", metrics.get("score_s")) or 0.0
    warmup = given.get("compile_wait_s") or 0.0
    save = given.get("write_s")
    if save is None and metrics.get("wall_s") is not None:  # the scorer's wall runs from its load to results written
        save = max(0.0, metrics["wall_s"] - load - work)
    save = save or 0.0
    until_load = sum(given.get(k, 0.0) for k in ("python_start_s", "imports_s", "setup_s"))  # process age at load
    if "python_start_s" in given and not in_process:
        startup = until_load
    elif "python_start_s" in given and age_at_start is not None:
        startup = until_load - age_at_start
    else:
        startup = wall - (load + warmup + work + save)
    out = {"startup": max(0.0, startup), "load": load, "warmup": warmup, "work": work, "save": save}
    out["exit"] = max(0.0, wall - sum(out.values()))
    return {f"phase_{k}_s": round(v, 3) for k, v in out.items()}


def run_stage(settings: dict, checkpoint_dir, eval_file, predictions_path, metrics_path, log=print,
              cost_of=None, launch: dict | None = None) -> dict:
    """`run`, then the stage's wall time (stage_wall_s) and `cost_of(stage wall s)`, the job's measured cost in
    service units (llmhpc.cluster.cost.measured: su, su_estimate, su_queue, ...; empty where the site has no rates),
    added to the metrics file the scorer wrote."""
    age = process_age()
    t0 = time.perf_counter()
    s = EvaluateSettings.from_dict(settings)  # once: the scorer's options and the phases below read it
    metrics = dict(run(s, checkpoint_dir, eval_file, predictions_path, metrics_path, log, launch=launch))
    wall = time.perf_counter() - t0
    metrics["stage_wall_s"] = round(wall, 3)
    in_process = SCORERS[s.scorer].processes(s) == 1
    if age is None:  # no process start to count from: the phases split the stage's wall
        metrics.update(phases(metrics, wall, None, in_process))
    else:  # the job's wall, from this process's start: its interpreter and imports are start-up
        metrics["job_wall_s"] = round(age + wall, 3)
        metrics.update(phases(metrics, age + wall, 0.0, in_process))
    if cost_of is not None:
        metrics.update(cost_of(metrics["stage_wall_s"]))
    atomic.write_json(metrics_path, metrics)
    if metrics.get("su") is not None:
        log(f"measured cost: {metrics['su']:g} SU ({metrics['su_queue']}, {metrics['su_rate']:g} SU/h x"
            f" {metrics['su_units']:g} {metrics['su_resource']} x {wall / 3600:.4f} h)")
    return metrics
