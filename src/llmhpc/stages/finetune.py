"""The finetune stage: run an experiment's engine (stock `litgpt finetune_full`/`finetune_lora`, or the fsdp2
engine, llmhpc.train.fsdp2) on the YAML that its own rule wrote, through the site's launcher, and summarise the run."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

from llmhpc import atomic, interrupt
from llmhpc.clock import process_age
from llmhpc.settings import FinetuneSettings
from llmhpc.train import attempts, registry, resume, stock_save_interval, walltime
from llmhpc.train.litgpt import PHASE_MARKS, find_metrics_csv, read_metrics_csv
from llmhpc.train.metrics import gpu_name, job_phases, model_facts, peak_tflops, phase_times, summarise, train_records_of


def run(cmd: list[str], stdout_path: Path, log=print, marks: dict | None = None,
        on_line=None) -> tuple[int, float, float]:
    """Run cmd with its whole output teed into stdout_path; return (exit code, wall s, peak child RSS GB).
    A `marks` dict receives the wall-clock times of the start, the end and the first line of each PHASE_MARKS,
    and `signal`, the SIGINT/SIGTERM that stopped the run (llmhpc.interrupt.Relay: handed on to the engine, which
    saves a step checkpoint and exits, while this keeps its output); `on_line` is called with every line."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", JSONARGPARSE_DEPRECATION_WARNINGS="off")
    log("running: " + " ".join(cmd))
    marks = {} if marks is None else marks
    marks["start"] = time.time()
    t0 = time.perf_counter()
    with open(stdout_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        with interrupt.Relay(proc, log) as relay:
            for line in proc.stdout:
                out.write(line)
                out.flush()
                if on_line is not None:
                    on_line(line)
                for name, text in PHASE_MARKS.items():  # `in`, not startswith: launchers may prefix rank tags
                    if name not in marks and text in line:
                        marks[name] = time.time()
            code = proc.wait()
        if relay.signum:
            marks["signal"] = signal.Signals(relay.signum).name
    wall = time.perf_counter() - t0
    marks["end"] = time.time()
    peak_rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    return code, wall, peak_rss_gb


def start_clean(out_dir: Path, config_path: Path, resuming: bool, log=print) -> Path | None:
    """Remove what a run writes afresh (final/, and logs/: litgpt would add logs/csv/version_1 beside a stale
    version_0) and keep the step checkpoints a resumed run starts from; return the one it will resume from."""
    for name in ("final", "logs"):
        if (out_dir / name).exists():
            shutil.rmtree(out_dir / name)
    if not resuming:
        resume.discard(out_dir)
        return None
    return resume.prepare(out_dir, config_path, log)


def stopped_by(marks: dict, out_dir: Path) -> str:
    """What the error says when a SIGINT/SIGTERM stopped the run: the checkpoint the rerun resumes from."""
    if not marks.get("signal"):
        return ""
    found = resume.latest(out_dir)
    where = f"{found.name} saved, the rerun resumes from it" if found else "no step checkpoint was saved"
    return f" on {marks['signal']} ({where}: run the same command again, with --rerun-incomplete)"


def check_final_weights(out_dir: Path, stdout_path) -> None:
    """A fine-tune that exited 0 must have left its weights: without them the directory output would pass to the
    evaluate jobs, which would fail later, on their own GPUs, far from the cause."""
    weights = Path(out_dir) / "final" / "lit_model.pth"
    if not weights.is_file():
        raise RuntimeError(f"the fine-tune exited with 0 but wrote no {weights}; see {stdout_path}")


def write_json(path: Path, data: dict) -> None:
    atomic.write_json(path, data)


def earlier_step_s(out_dir: Path, config_path: Path, settings: FinetuneSettings) -> float | None:
    """Seconds per optimizer step that an earlier attempt of this experiment measured with the same training
    settings (read before start_clean removes its logs/), for an engine whose saves the stage plans."""
    if registry.of(settings).plans_saves:
        return None
    now = resume.training_settings(resume.read_yaml(config_path))
    return stock_save_interval.measured_step_s(out_dir, settings.accumulation, now)


def stock_interval(config_path: Path, checkpoint_dir, settings: FinetuneSettings, runtime_min: float | None,
                   peak_override: float | None, earlier_s: float | None, log=print) -> tuple[Path, dict]:
    """The YAML stock litgpt runs and what the summary records: in a scheduler job, a copy whose
    train.save_interval is min(configured, the walltime's plan) (llmhpc.train.stock_save_interval); elsewhere the YAML."""
    import yaml

    now = time.time()
    configured = (resume.read_yaml(config_path).get("train") or {}).get("save_interval")
    clock = walltime.job_clock(os.environ, now, runtime_min)
    estimate, gpu = None, None
    if clock is not None and not earlier_s:
        gpu = gpu_name()
        model_config = yaml.safe_load((Path(checkpoint_dir) / "model_config.yaml").read_text())
        estimate = stock_save_interval.estimated_step_s(model_config, settings,
                                                peak_tflops(gpu, settings.precision, peak_override))
    interval = stock_save_interval.choose(configured, clock, now, settings.save_walltime_share, earlier_s,
                                  estimate, gpu)
    log(interval.line())
    run_config = Path(config_path)
    if interval.save_interval != configured:
        run_config = stock_save_interval.write_job_yaml(config_path, interval)
    return run_config, interval.record()


def run_stage(config_path, checkpoint_dir, out_dir, stdout_path, metrics_path, summary_path, settings: dict,
              peak_override: float | None, threads: int, launch: dict | None = None, log=print,
              runtime_min: float | None = None, cost_of=None) -> dict:
    """Run the fine-tune of one experiment and write its stdout, metrics.csv and summary JSON. `launch` is
    llmhpc.cluster.launch.plan's answer (its command prefix starts the processes; the whole plan is recorded in the
    summary). A failed fine-tune still leaves its stdout and its step checkpoints (the next run resumes from the
    newest: llmhpc.train.resume), then raises. `cost_of(stage wall s)` gives the job's measured cost in service
    units for the summary (llmhpc.cluster.cost.measured; empty where the site has no rates). `settings`: the
    experiment's finetune section as the rule passes it, read once into FinetuneSettings."""
    out_dir = Path(out_dir)
    typed = FinetuneSettings.from_dict(settings)
    earlier_s = earlier_step_s(out_dir, Path(config_path), typed)
    resuming = resume.enabled(typed, Path(config_path), log)
    accumulation, engine = max(1, typed.accumulation), registry.of(typed)
    attempts.close_previous(out_dir, engine, accumulation)  # before logs/ goes
    resumed_from = start_clean(out_dir, Path(config_path), resuming, log)
    history = attempts.begin(out_dir, resumed_from)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    # the job's end, for the fsdp2 engine's save plan (the rule's runtime resource is the job's walltime)
    os.environ.update(walltime.engine_env(os.environ, time.time(), runtime_min, typed.save_walltime_share))
    run_config, saves = Path(config_path), {}
    if not engine.plans_saves and resuming:  # a run that cannot resume needs none
        run_config, saves = stock_interval(config_path, checkpoint_dir, typed, runtime_min, peak_override,
                                           earlier_s, log)
    cmd = engine.command(typed.method, run_config, (launch or {}).get("prefix"))
    marks = {}
    age = process_age()  # this job's interpreter, imports and set-up before the engine starts: its start-up too
    code, wall, peak_rss = run(cmd, Path(stdout_path), log, marks, resume.pruner(out_dir, log))
    text = Path(stdout_path).read_text(encoding="utf-8", errors="replace")
    if code != 0:
        tail = "\n".join(text.splitlines()[-30:])
        raise RuntimeError(f"{engine.title(typed.method)} exited with {code}{stopped_by(marks, out_dir)}; last lines of"
                           f" {stdout_path}:\n{tail}")
    check_final_weights(out_dir, stdout_path)
    csv_path = find_metrics_csv(out_dir)
    if csv_path is None:
        raise RuntimeError(f"litgpt wrote no metrics.csv under {out_dir}/logs/csv")
    rows = read_metrics_csv(csv_path)
    if history["killed"]:  # from step 1: the earlier attempts' rows up to where each next one resumed
        rows = attempts.continuous(history, rows, accumulation)
        attempts.write_csv(Path(metrics_path), rows)
    else:
        atomic.copy_file(csv_path, metrics_path)
    start_step = resume.step_of(resumed_from) if resumed_from else 0
    # samples/s counts the training set's records (x epochs, or max_steps x a step's samples), not steps x batch
    records = train_records_of(resume.read_yaml(run_config))
    summary = summarise(text, rows, typed, wall, code, model_facts(checkpoint_dir), gpu_name(), peak_override,
                        peak_rss, start_iter=start_step * accumulation, train_records=records)
    summary.update(phase_times(marks, summary["training_time_s"], out_dir / "final"))
    summary.update(job_phases(text, marks, summary["training_time_s"], out_dir / "final", summary["stage_wall_s"],
                              before_s=age or 0.0))
    if age is not None:  # process start to the engine's exit: what the scheduler charged for
        summary["job_wall_s"] = round(age + summary["stage_wall_s"], 3)
    summary["command"] = " ".join(cmd)
    summary.update(saves)  # the stock engine's step-checkpoint interval and why
    summary["resumed_from_step"] = start_step or None
    # over every attempt of a resumed run: training time, samples/s, tokens/s; the attempts and the time lost
    summary.update(attempts.whole_run(history, summary, summary["world_size"]))
    resume.discard(out_dir)  # done: the step checkpoints (optimizer state included) go
    if launch is not None:
        summary["launch"] = launch  # launcher, command prefix, environment, hosts, scheduler job id
    if cost_of is not None:
        summary.update(cost_of(summary["stage_wall_s"]))
    write_json(summary_path, summary)
    log(json.dumps(summary, indent=1))
    return summary
