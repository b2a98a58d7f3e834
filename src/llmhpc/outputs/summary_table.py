"""The summary table's shape: one long table (run, experiment, stage, metric, value, unit, source) that the summary
stage writes and the plots and slides read. Here, below both, so that the readers need not import the stage."""

COLUMNS = ["run", "experiment", "stage", "metric", "value", "unit", "source"]

# The parts of a job's wall time, in the order they happen: python start-up and imports, loading the model, compile
# warm-up the job waited for, the work itself (training, scoring), writing the results, and exit (the rest of the
# wall: teardown, and whatever the job did not time on its own).
PHASES = ("startup", "load", "warmup", "work", "save", "exit")
PHASE_NAMES = {"startup": "start-up", "load": "load", "warmup": "warm-up", "work": "work", "save": "save",
               "exit": "exit"}
JOB_STAGES = {"finetune": "fine-tune", "evaluate": "evaluate"}
# A job whose figures have no phase_*_s yet (a summary written before they were recorded): the figures that stand in
# for its phases, first present wins. Start-up is then inside load (the fine-tune's load_s runs from launch), and
# exit is the rest of the wall (a fine-tune's final validation among it).
PHASE_FALLBACK = {"finetune": {"load": ("load_s",), "work": ("last_attempt_training_time_s", "training_time_s"),
                               "save": ("save_s",)},
                  "evaluate": {"load": ("load_s",), "work": ("score_s",)}}
# The wall the phases split: the job's (its process's start to its outputs), else the stage's (launch to exit), else
# the scorer's own (process start to results written).
JOB_WALL = {"finetune": ("job_wall_s", "stage_wall_s"), "evaluate": ("job_wall_s", "stage_wall_s", "wall_s")}


def phase_sources(has, experiment: str, stage: str) -> tuple[str | None, dict[str, str | None], bool]:
    """Where each phase of one job comes from: (the wall's metric or None where the job has no wall yet,
    {phase: metric, or None where not recorded; exit None means the rest of the wall}, whether the job recorded
    its phases itself). `has(experiment, stage, metric)` says whether the summary has that figure."""
    wall = next((m for m in JOB_WALL[stage] if has(experiment, stage, m)), None)
    recorded = any(has(experiment, stage, f"phase_{p}_s") for p in PHASES)
    sources = {}
    for phase in PHASES:
        candidates = (f"phase_{phase}_s",) if recorded else PHASE_FALLBACK[stage].get(phase, ())
        sources[phase] = next((m for m in candidates if has(experiment, stage, m)), None)
    return wall, sources, recorded
