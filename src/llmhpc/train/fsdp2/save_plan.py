"""Which steps the fsdp2 engine saves a step checkpoint after: llmhpc.train.walltime's plan, from the job's end
(LLMHPC_JOB_END_TIME, set by the stage) and the step and save times measured on every process.

The plan is made after the first MEASURED steps of the run and again MEASURED steps after each save (the save's
time is then known; the line it logs says what it chose and why); its inputs are all-reduced (the slowest
process's step and save, the least time left), so every process makes the same plan and saves after the same
steps. Between plans, `due` only compares numbers.
Without a known end the plan is `train.save_interval` from the start, and nothing is measured.
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch

from llmhpc import process_group
from llmhpc.train import walltime

MEASURED = 3


class Schedule:
    def __init__(self, run, world, environ=os.environ) -> None:
        self.world, self.cap = world, run.train.save_interval
        end, start = (walltime._number(environ.get(k)) for k in (walltime.END, walltime.START))
        self.end = end
        self.walltime_s = end - (start or time.time()) if end else None
        self.share = walltime._number(environ.get(walltime.SHARE)) or 0.1
        self.plan = walltime.plan(0, None, None, 0.0, None, self.share, self.cap) if end is None else None
        self.mark = None  # (step, perf_counter) the current measurement started at
        self.measuring = end is not None  # from the run's first step, and after each save
        self.save_s = None
        self.last_chance_taken = False
        if self.plan is not None:
            self._log()

    def due(self, step: int) -> bool:
        """Whether to save after `step` (called once per step, after it)."""
        if self.measuring:
            now = time.perf_counter()
            if self.mark is None:
                self.mark = (step, now)
            elif step - self.mark[0] >= MEASURED:
                self._replan(step, now)
        if self.plan is None:
            return step % self.cap == 0
        return self.plan.due(step)

    def saved(self, step: int, seconds: float) -> None:
        """A save after `step` took `seconds`: measure afresh from here, then plan with the save's time."""
        self.save_s = max(self.save_s or 0.0, seconds)
        if self.plan is not None and step == self.plan.deadline:
            self.last_chance_taken = True
        if self.end is not None:
            self.mark, self.measuring = (step, time.perf_counter()), True

    def _replan(self, step: int, now: float) -> None:
        step_s = (now - self.mark[1]) / (step - self.mark[0])
        measured = torch.tensor([step_s, self.save_s or -1.0, time.time() - self.end], dtype=torch.float64,
                                device=self.world.device)
        step_s, save_s, late = process_group.all_max(measured, self.world.size).tolist()  # one host sync per plan
        plan = walltime.plan(step, -late, self.walltime_s, step_s, save_s if save_s >= 0 else None, self.share,
                             self.cap)
        if self.last_chance_taken and plan.deadline is not None and plan.deadline <= step:
            plan = dataclasses.replace(plan, deadline=None)  # the last save is made: no other one right away
        self.plan, self.mark, self.measuring = plan, None, False  # measured again after the next save
        self._log()

    def _log(self) -> None:
        if self.world.main:
            print(f"Step checkpoints every {self.plan.every} steps ({self.plan.why})", flush=True)
