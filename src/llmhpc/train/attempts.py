"""A fine-tune killed and resumed is one run made of several attempts; its figures are the whole run's.

Each attempt that was killed (walltime, Ctrl-C, scancel) is recorded in `out_dir/attempts.json` when the rerun
starts, before the stage clears `out_dir/logs` (llmhpc.stages.finetune.start_clean): its CSV rows, where it started,
the optimizer steps it did, its training time (the `iter_time` of its logged rows: stock logs one micro batch's
time per row, every `train.log_interval` iterations, the fsdp2 engine one optimizer step's per row) and when its
log was last written. Once the rerun knows which step it resumes from, the killed attempt's lost time is fixed: from
that step checkpoint's completion (its marker's mtime; not before the attempt started) to its last logged row.

When the run finishes, `continuous` gives metrics.csv from step 1 (each attempt's rows up to the step the next one
resumed from) and `whole_run` the figures over every attempt: training time is the sum of the attempts' training
times, samples/s the run's samples (each once: records x epochs, or max_steps x a step's samples) and tokens/s
its steps over that sum; the lost time is the summed time after the last checkpoint of each killed attempt. The file
goes with the step checkpoints (llmhpc.train.resume.discard), after a finished run or when a run starts over.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from llmhpc import atomic
from llmhpc.train import resume
from llmhpc.train.litgpt import find_metrics_csv, read_metrics_csv
from llmhpc.train.metrics import samples_per_s

if TYPE_CHECKING:
    from llmhpc.train.registry import Engine

HISTORY = resume.HISTORY_FILE


def _path(out_dir: Path) -> Path:
    return Path(out_dir) / HISTORY


def load(out_dir: Path) -> dict:
    path = _path(out_dir)
    history = json.loads(path.read_text()) if path.is_file() else {}
    return {"killed": history.get("killed", []), "current": history.get("current")}


def forget(out_dir: Path) -> None:
    _path(out_dir).unlink(missing_ok=True)


def _iter(row: dict) -> int:
    """The iteration of a CSV row: Lightning's CSV logger writes the logging step (litgpt's iter_num) as `step`."""
    return int(row.get("iter") or row.get("step") or 0)


def attempt_time_s(train_rows: list[dict], start_iter: int, engine: Engine, accumulation: int) -> float:
    """Training time of a killed attempt from its logged rows: the mean time of an iteration x its iterations."""
    per_iter = [engine.iter_time_s(r["iter_time"], accumulation) for r in train_rows if r.get("iter_time") is not None]
    if not per_iter:
        return 0.0
    return sum(per_iter) / len(per_iter) * (max(_iter(r) for r in train_rows) - start_iter)


def close_previous(out_dir: Path, engine: Engine, accumulation: int) -> None:
    """Before the rerun clears out_dir/logs: record the attempt that left them, if it was killed (step checkpoints
    are left: a finished run removes its own)."""
    out_dir = Path(out_dir)
    csv_path = find_metrics_csv(out_dir)
    if csv_path is None or not resume.step_folders(out_dir):
        return
    history = load(out_dir)
    current = history["current"] or {"start_step": 0, "started": None}
    rows = read_metrics_csv(csv_path)
    train = [r for r in rows if r.get("loss") is not None]
    start_iter = current["start_step"] * accumulation
    last_step = max(_iter(r) for r in train) // accumulation if train else current["start_step"]
    history["killed"].append({
        "start_step": current["start_step"], "started": current.get("started"), "ended": csv_path.stat().st_mtime,
        "steps": max(0, last_step - current["start_step"]), "last_step": last_step,
        "training_time_s": round(attempt_time_s(train, start_iter, engine, accumulation), 3), "rows": rows,
    })
    history["current"] = None
    atomic.write_json(_path(out_dir), history)


def begin(out_dir: Path, resumed_from: Path | None) -> dict:
    """The rerun's start: a run from the start forgets every earlier attempt; a resumed one fixes the last killed
    attempt's lost time against the checkpoint it resumes from, and records where and when this attempt starts."""
    out_dir = Path(out_dir)
    if resumed_from is None:
        forget(out_dir)
        history = {"killed": [], "current": None}
    else:
        history = load(out_dir)
        marker = next((Path(resumed_from) / m for m in resume.MARKERS if (Path(resumed_from) / m).is_file()), None)
        for attempt in history["killed"]:
            if "lost_time_s" not in attempt:
                saved = marker.stat().st_mtime if marker is not None else attempt["ended"]
                since = max(saved, attempt.get("started") or saved)
                attempt["lost_time_s"] = round(max(0.0, attempt["ended"] - since), 3)
    history["current"] = {"start_step": resume.step_of(resumed_from) if resumed_from else 0, "started": time.time()}
    atomic.write_json(_path(out_dir), history)
    return history


TOKEN_COUNTS = ("tokens", "total_tokens")  # LitGPT's running counts, which each attempt starts again from 0


def continuous(history: dict, final_rows: list[dict], accumulation: int) -> list[dict]:
    """metrics.csv of the whole run: each killed attempt's rows up to the step the next attempt resumed from, then
    the last attempt's; the running token counts go on from where the kept rows left them."""
    killed = history["killed"]
    starts = [a["start_step"] for a in killed[1:]] + [(history["current"] or {}).get("start_step", 0)]
    out: list[dict] = []
    for rows, next_start in zip([a["rows"] for a in killed] + [final_rows], starts + [None]):
        kept = [r for r in rows if next_start is None or int(r.get("step") or _iter(r)) <= next_start * accumulation]
        out += _counted_on(kept, out[-1] if out else {})
    return out


def _counted_on(rows: list[dict], before: dict) -> list[dict]:
    """`rows` with their token counts raised by the counts of the row `before` them (another attempt's last)."""
    offsets = {c: before.get(c) or 0 for c in TOKEN_COUNTS}
    if not any(offsets.values()):
        return list(rows)
    return [{**r, **{c: r[c] + offsets[c] for c in TOKEN_COUNTS if r.get(c) is not None}} for r in rows]


def whole_run(history: dict, summary: dict, world: int) -> dict:
    """Training time over every attempt, and samples/s and tokens/s as the run's own samples and steps (each once)
    over it (MFU scaled with tokens/s): a step redone after a kill is time lost, as lost_time_s says, not more
    samples, so a resumed run's score and its time ratio against another run agree. Also the number of attempts and
    the time lost after the last checkpoint of each killed one. `summary`: the last attempt's figures, with `steps`
    the whole run's, `trained_samples` the whole run's (llmhpc.train.metrics.trained_samples: records x epochs, or
    max_steps x the step's samples) and `resumed_from_step` where the last attempt started."""
    killed = history["killed"]
    out = {"attempts": len(killed) + 1, "lost_time_s": round(sum(a.get("lost_time_s", 0.0) for a in killed), 3)}
    last_time, steps = summary.get("training_time_s"), summary.get("steps")
    if not killed or not last_time or steps is None:
        return out
    last_steps = steps - (summary.get("resumed_from_step") or 0)
    total_time = last_time + sum(a["training_time_s"] for a in killed)
    out.update(training_time_s=round(total_time, 3), last_attempt_training_time_s=last_time,
               samples_per_s=samples_per_s(summary.get("trained_samples"), total_time))
    if summary.get("tokens_per_s") and last_steps > 0:
        per_step = summary["tokens_per_s"] * last_time / last_steps  # killed attempts: the last one's tokens a step
        tokens_per_s = per_step * steps / total_time
        out.update(tokens_per_s=round(tokens_per_s, 2), tokens_per_s_per_device=round(tokens_per_s / world, 2))
        if summary.get("mfu"):
            out["mfu"] = round(summary["mfu"] * tokens_per_s / summary["tokens_per_s"], 4)
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    """The rows as a CSV with every column any row has (in first-seen order); an empty cell for None."""
    import csv
    import io

    columns = list(dict.fromkeys(k for r in rows for k in r))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else _plain(row[k])) for k in columns})
    atomic.write_text(path, text.getvalue())


def _plain(value):
    """1.0 -> 1 for counters (read back as floats), so the CSV reads as the engine wrote it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
