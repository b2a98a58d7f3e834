"""When to save a step checkpoint so that a walltime kill loses little: the job's end, from the scheduler, and the
save plan, from the measured step and save times (pure functions; the fsdp2 engine's loop asks save_plan.Schedule).

The job's end: Slurm's `SLURM_JOB_END_TIME` (and `SLURM_JOB_START_TIME`) where Slurm sets them, else the walltime
(PBS's `PBS_WALLTIME` seconds, or the rule's `runtime` resource in minutes, which the cluster profiles turn into
`sbatch -t` / `-l walltime=`) counted from the stage's start, for a job that a scheduler runs (`SLURM_JOB_ID`,
`PBS_JOBID`). The stage passes it to the engine as LLMHPC_JOB_START_TIME / LLMHPC_JOB_END_TIME (epoch seconds),
with finetune.save_walltime_share as LLMHPC_SAVE_SHARE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

START, END, SHARE = "LLMHPC_JOB_START_TIME", "LLMHPC_JOB_END_TIME", "LLMHPC_SAVE_SHARE"


def job_clock(environ, now: float, runtime_min: float | None = None) -> tuple[float, float] | None:
    """(start, end) of this scheduler job in epoch seconds, or None where nothing ends it (a local run)."""
    end = _number(environ.get("SLURM_JOB_END_TIME"))
    if end:
        return _number(environ.get("SLURM_JOB_START_TIME")) or now, end
    if not (environ.get("SLURM_JOB_ID") or environ.get("PBS_JOBID")):
        return None
    walltime = _number(environ.get("PBS_WALLTIME")) or (runtime_min or 0) * 60
    return (now, now + walltime) if walltime > 0 else None


def engine_env(environ, now: float, runtime_min: float | None, share: float) -> dict:
    """The variables the stage gives the engine: the job's start and end where known, and the share."""
    clock = job_clock(environ, now, runtime_min)
    if clock is None:
        return {}
    return {START: f"{clock[0]:.0f}", END: f"{clock[1]:.0f}", SHARE: str(share)}


def _number(text) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Plan:
    every: int  # save after every step that is a multiple of this
    deadline: int | None  # and after this step, the last one whose save ends ~2 step times before the kill
    why: str

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.deadline


def plan(step: int, remaining_s: float | None, walltime_s: float | None, step_s: float, save_s: float | None,
         share: float, cap: int) -> Plan:
    """The save plan from step `step` on: `remaining_s` of the job left at its end, `step_s` per step and `save_s`
    per save measured (None: not yet; assumed max(10 step times, 30 s)). A kill loses at most `share` of the
    walltime (saves every share x walltime / step_s steps, at most `cap`: finetune.save_interval), and one more
    save comes before the remaining time falls below 2 step times + a save. Without a known end: every `cap`."""
    if remaining_s is None or not walltime_s or step_s <= 0:
        return Plan(cap, None, "finetune.save_interval; the job's end is unknown")
    guessed = save_s is None
    save_s = max(10 * step_s, 30.0) if guessed else save_s
    by_share = max(1, math.floor(share * walltime_s / step_s))
    every = min(cap, by_share)
    # after step d the time left is remaining_s - (d - step) x step_s; the save must leave 2 step times
    margin = 2 * step_s + save_s
    deadline = step + max(0, math.floor((remaining_s - margin) / step_s))
    why = (f"{'finetune.save_interval' if every == cap else f'{share:.0%} of the {walltime_s:.0f} s walltime'}"
           f" at {step_s:.3g} s a step; a last save after step {deadline}, {margin:.0f} s before the job's end"
           f" (2 steps + a save of {save_s:.3g} s{', guessed' if guessed else ''})")
    return Plan(every, deadline, why)
