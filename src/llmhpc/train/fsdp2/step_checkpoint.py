"""Resumable step checkpoints of the fsdp2 engine: model, optimizer, LR scheduler, grad scaler, step and RNG, in
`out_dir/step-NNNNNN/` every `train.save_interval` optimizer steps, where stock LitGPT puts its own.

Model and optimizer go through torch.distributed.checkpoint with FSDP2's state dict API (`get_state_dict` /
`set_state_dict`): every process writes its own shards, so a save costs no gather, and the same folder loads on
another number of processes (or one plain process). Only trained weights are saved (not a LoRA run's frozen
base). The rest is small and the same on every process: the main process writes it to `extra.pt`. The folder
counts as whole once `resume.json` (written last, after every process has finished writing) is there; a folder
without it is a save that a kill cut short, and is ignored.

The data position is the step: the sample order is the plan (data.plan), a function of the data seed, so a resumed
run trains step s+1 onwards on exactly the samples an uninterrupted run would.

The scheduler's warning before its kill (SIGTERM: PBS Pro's walltime and qdel, Slurm's time limit and scancel, each
followed by SIGKILL after a delay; SIGUSR1: Slurm's `--signal=USR1@<seconds>`), and a Ctrl-C (SIGINT), make the run
save at the end of a step and exit:
every process learns of it through a one-number all-reduce per step, read a step later with the logged loss (no
extra host sync), so they all save after the same step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmhpc import process_group
from llmhpc.train import resume as shared
from llmhpc.train.fsdp2.save_plan import Schedule

MARKER = "resume.json"


@dataclass
class StepCheckpoints:
    """The run's step checkpoints, as torchtitan's CheckpointManager holds them: the state a resumed run starts from,
    which steps to save after (save_plan.Schedule), the writer (save) and the signals that make the run save and
    stop (Warned). Without `train.save_interval` there is no plan and no signal handler, and nothing is saved."""

    state: Any  # state.RunState: the model, optimizer, scheduler and scaler saved and restored
    run: Any  # args.RunArgs
    resumed_at: int = 0  # the steps the restored checkpoint had done (0: a fresh start from checkpoint_dir)
    schedule: Schedule | None = None
    warned: Warned | None = None

    @classmethod
    def open(cls, state, run) -> StepCheckpoints:
        """Restore what `resume:` names (after the warm-up, which touches the optimizer's state), then plan the
        saves and listen for the scheduler's warning, where save_interval asks for step checkpoints."""
        done = restore(state, run)
        if not run.train.save_interval:
            return cls(state, run, done)
        return cls(state, run, done, Schedule(run, state.world), Warned())

    def stop_flag(self) -> torch.Tensor | None:
        """1 on every process once any got the scheduler's warning (an all-reduce, read a step later); None
        without step checkpoints."""
        return self.warned.flag(self.state.world) if self.warned is not None else None

    def due(self, step: int, stop: bool, last_step: int) -> bool:
        """Whether to save after `step`: on the warning (`stop`), or where the plan says so before the last step
        (whose weights the final checkpoint holds). Asks the plan every step: it measures the step time."""
        if self.schedule is None:
            return False
        planned = self.schedule.due(step)
        return stop or (planned and step < last_step)

    def save(self, step: int, stop: bool) -> None:
        """Write step `step`'s checkpoint and tell the plan how long it took; on the warning, then stop the run."""
        t0 = time.perf_counter()
        save(self.state, self.run, step)
        self.schedule.saved(step, time.perf_counter() - t0)
        if stop:
            raise Stopped(step, self.state.world, self.warned.signum)

    def release(self) -> None:
        """After the loop: the signals do what they did before."""
        if self.warned is not None:
            self.warned.release()


def settings_hash(run) -> str:
    """The training settings a saved state must match: the YAML's training keys with the engine's switches."""
    cfg = dict(run.litgpt_yaml, engine=dataclasses.asdict(run.engine))
    text = json.dumps(shared.training_settings(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _options(loading: bool = False):
    """Frozen weights (a LoRA run's base model) are left out: they are checkpoint_dir's, loaded at the start.
    dcp.load fails on any key the folder lacks, so the model's own load need not be strict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, strict=not loading)


def _model_and_optimizer(state) -> tuple[dict, dict]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(state.model, state.optimizer, options=_options())


def save(state, run, step: int) -> Path:
    """Write step `step`'s resumable state (every process takes part)."""
    import torch.distributed.checkpoint as dcp

    world = state.world
    folder = Path(run.out_dir) / f"step-{step:06d}"
    if world.main:
        print(f"Saving checkpoint to {str(folder)!r}", flush=True)
        if folder.exists():  # a save an earlier, killed run left half-written
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    process_group.barrier(world.size)
    model_sd, optim_sd = _model_and_optimizer(state)
    with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=folder, no_dist=world.size == 1)
    if world.main:
        scaler = state.scaler
        torch.save({"scheduler": state.scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                    "rng": torch.get_rng_state(), "step": step}, folder / "extra.pt")
    process_group.barrier(world.size)  # every process's shards are written before the marker says so
    if world.main:
        from llmhpc import atomic

        atomic.write_json(folder / MARKER, {"step": step, "processes": world.size, "settings": settings_hash(run)})
    return folder


def find(run, world) -> Path | None:
    """The folder `resume:` names: auto/true the newest whole one in out_dir made with these settings, or a path."""
    choice = run.resume
    if choice in (None, False, "false"):
        return None
    if choice not in (True, "auto", "true"):
        folder = Path(choice)
        if not (folder / MARKER).is_file():
            raise FileNotFoundError(f"resume: {folder} is not a whole step checkpoint of this engine (no {MARKER})")
        return folder
    wanted = settings_hash(run)
    for folder in reversed(shared.step_folders(run.out_dir)):
        marker = folder / MARKER
        if not marker.is_file():
            continue  # half-written, or stock's
        if json.loads(marker.read_text()).get("settings") == wanted:
            return folder
        if world.main:
            print(f"Not resuming from {folder}: it was trained with other settings than {run.out_dir}'s YAML",
                  flush=True)
    if choice in (True, "true"):
        raise FileNotFoundError(f"resume: true, but no whole step checkpoint in out_dir={run.out_dir}")
    return None


def restore(state, run) -> int:
    """Load the state `resume:` names into the model, optimizer, scheduler and scaler; the steps it had done
    (0: start from checkpoint_dir). After the warm-up, which touches the optimizer's state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    world = state.world
    folder = find(run, world)
    if folder is None:
        return 0
    model_sd, optim_sd = _model_and_optimizer(state)
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=folder, no_dist=world.size == 1)
    set_state_dict(state.model, state.optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                   options=_options(loading=True))
    extra = torch.load(folder / "extra.pt", weights_only=False, map_location="cpu")  # our own file
    state.scheduler.load_state_dict(extra["scheduler"])
    if state.scaler and extra["scaler"]:
        state.scaler.load_state_dict(extra["scaler"])
    torch.set_rng_state(extra["rng"])
    if world.main:
        print(f"Resuming training from {folder} (step {extra['step']})", flush=True)
    return int(extra["step"])


class Warned:
    """Notes SIGTERM / SIGUSR1 / SIGINT (a Ctrl-C, or the stage handing one on: llmhpc.interrupt); `flag` is 1 on
    every process once any process got one (an all-reduce, not read)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self) -> None:
        self.signum = 0
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._note) for sig in self.SIGNALS}

    def _note(self, signum, frame) -> None:
        self.signum = self.signum or signum

    def release(self) -> None:
        """After the loop: the signals do what they did before (there is no step left to save at)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def flag(self, world) -> torch.Tensor:
        # filled on the device: torch.tensor(x, device="cuda") copies from the host and waits for the GPU to
        # finish the step first, a host sync at every step boundary (the step's kernels could not be queued ahead)
        value = torch.full((), float(self.signum > 0), device=world.device)
        return process_group.all_sum(value, world.size)


class Stopped(SystemExit):
    """Raised on every process once the step checkpoint that the signal asked for is written; the exit status is
    128 + the signal's number (143 where this process got none of its own: another rank's)."""

    def __init__(self, step: int, world, signum: int = 0) -> None:
        signum = signum or signal.SIGTERM
        if world.main:
            why = "the scheduler's signal" if signum != signal.SIGINT else "an interrupt (SIGINT)"
            print(f"Stopped after step {step} on {why}, its checkpoint saved: rerun to resume", flush=True)
        super().__init__(128 + signum)
