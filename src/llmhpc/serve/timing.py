"""Where the engine's time goes: wall time of prefills and of decode steps per batch size (GET /health shows them),
and, when asked (`llmhpc-serve --profile-out FILE`), a torch.profiler table of one prefill and of one decode step
per batch size (the top 10 kernels by device time, or CPU time without a GPU) appended to FILE, for the batch
buckets 1, 2, 4, ..."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

from llmhpc.profiling import top_table

PROFILE_AT = 8  # the prefill, and the decode step of a batch size, that is profiled (past the first shapes' start)


class StepTimes:
    def __init__(self, profile_out=None, profile_batches=None):
        self.profile_out = Path(profile_out) if profile_out else None
        self.profile_batches = profile_batches  # the batch sizes profiled (None: all)
        self.prefill_s, self.prefill_tokens, self.prefills = 0.0, 0, 0
        self.decode: dict[int, list] = {}  # batch size: [steps, seconds]

    @contextlib.contextmanager
    def timed(self, profile: bool, title: str, count):
        """Time the block and pass its seconds to `count` (also when it raises); with `profile`, also profile it
        and append its table under `title`, where `{ms}` becomes the block's wall time."""
        profiler = None
        if profile:
            profiler = torch.profiler.profile(activities=activities())
            profiler.__enter__()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            count(seconds)
            if profiler is not None:
                profiler.__exit__(None, None, None)
                self.write(profiler, title.format(ms=f"{seconds * 1e3:.2f}"))

    def prefill(self, tokens: int):
        """Time one prefill of `tokens` prompt tokens (ending with its transfer to the host); prefill PROFILE_AT is
        profiled when a profile is asked for."""
        def count(seconds):
            self.prefill_s, self.prefill_tokens, self.prefills = (self.prefill_s + seconds,
                                                                  self.prefill_tokens + tokens, self.prefills + 1)

        profile = self.profile_out is not None and self.prefills == PROFILE_AT
        return self.timed(profile, f"prefill of {tokens} prompt tokens, {{ms}} ms wall", count)

    def profile_due(self, batch: int, steps: int = 1) -> bool:
        """Whether step PROFILE_AT of this batch size falls among the next `steps` (then run alone)."""
        done = self.decode.get(batch, [0])[0]
        return (self.profile_out is not None and done <= PROFILE_AT < done + steps
                and (self.profile_batches is None or batch in self.profile_batches))

    def steps_before_profile(self, batch: int) -> int:
        return PROFILE_AT - self.decode.get(batch, [0])[0]

    def step(self, batch: int, steps: int = 1):
        """Time `steps` decode steps of `batch` sequences run back to back (ending with their one transfer to the
        host); a step due for profiling is run alone (steps 1)."""
        counts = self.decode.setdefault(batch, [0, 0.0])

        def count(seconds):
            counts[0] += steps
            counts[1] += seconds

        return self.timed(self.profile_due(batch, steps), f"decode step, batch {batch}, {{ms}} ms wall", count)

    def write(self, profiler, title: str) -> None:
        self.profile_out.parent.mkdir(parents=True, exist_ok=True)
        with self.profile_out.open("a") as f:
            f.write(f"## {title}\n{top_table(profiler)}\n")

    def summary(self) -> dict:
        return {"prefill_s": self.prefill_s, "prefill_tokens": self.prefill_tokens, "prefills": self.prefills,
                "decode_steps": {str(b): n for b, (n, _) in sorted(self.decode.items())},
                "decode_ms_per_step": {str(b): 1e3 * s / n for b, (n, s) in sorted(self.decode.items()) if n}}


def activities() -> list:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts


@contextlib.contextmanager
def profiled(path, title: str):
    """Profile the block; append its top table under `title` to `path`."""
    with torch.profiler.profile(activities=activities()) as prof:
        yield
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    StepTimes(path).write(prof, title)
