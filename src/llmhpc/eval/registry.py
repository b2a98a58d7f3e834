"""The scorers `evaluate.scorer` names, looked up here once: each entry owns its typed options (built once from
the validated evaluate settings; the one thing that reaches the scorer, across the process boundary as one JSON
argument), its program and command, what it can do (the config check, the preflight and the job's GPUs ask it);
its program writes metrics.json with the entry's name as `scorer`.

    reference  lm-evaluation-harness's loop, in the stage's process (llmhpc.eval.reference)
    fast       each context once with its endings packed, one process per GPU (python -m llmhpc.eval.run)

No other module compares scorer names. Light to import (no torch): the workflow reads it at parse time."""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmhpc.settings import EvaluateSettings


@dataclass(frozen=True)
class ScoringJob:
    """The files every scorer reads and writes: the checkpoint, the eval items, predictions and metrics."""

    checkpoint: Path
    eval_file: Path
    predictions: Path
    metrics: Path

    def __post_init__(self):  # the settings' strings (and a JSON argument's) as the types the fields say
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "Path | None" and not value:  # null or "": no file (not Path(""), which is ".")
                object.__setattr__(self, f.name, None)
            elif f.type in ("Path", "Path | None") and not isinstance(value, Path):
                object.__setattr__(self, f.name, Path(value))
            elif f.type == "str" and not isinstance(value, str):
                object.__setattr__(self, f.name, str(value))

    def to_json(self) -> str:
        """The options as the one argument of each of the scorer's processes (`--options`)."""
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()})

    @classmethod
    def from_json(cls, text: str):
        return cls(**json.loads(text))

    @classmethod
    def from_settings(cls, settings: EvaluateSettings, job: ScoringJob, **program):
        """The job's files, the evaluate settings the class has fields of the same names for, and `program`'s keys
        (the scorer's own knobs, which the config does not set; left out, the class's defaults)."""
        own = {f.name for f in dataclasses.fields(cls)} & {f.name for f in dataclasses.fields(settings)}
        return cls(**{f.name: getattr(job, f.name) for f in dataclasses.fields(ScoringJob)},
                   **{name: getattr(settings, name) for name in own - set(program)}, **program)


@dataclass(frozen=True)
class ReferenceOptions(ScoringJob):
    """What the reference scorer reads (the evaluate keys of the same names)."""

    precision: str
    batch_size: int
    bos: str
    device: str
    reference_metrics: Path | None
    tolerance_pt: float


@dataclass(frozen=True)
class FastOptions(ScoringJob):
    """What each process of the fast scorer reads: the evaluate keys of the same names, then the program's own
    knobs (python -m llmhpc.eval.run's flags)."""

    precision: str
    bos: str
    device: str
    token_budget: int
    pipeline_stages: int
    compile: str
    reference_metrics: Path | None
    tolerance_pt: float
    float8: bool = False  # the blocks' linear layers in float8 (llmhpc.eval.float8)
    max_memory_gib: float = 0.0  # cap each process's GPU memory
    limit: int = 0  # score only the first N items
    no_resume: bool = False  # ignore part files of an earlier run
    peak_tflops: float = 0.0  # per device, for MFU in the metrics
    wait_for_compile: bool = False  # score no batch before the blocks are compiled
    first_chunk: int = 256  # items tokenised before the first batches are scored; later chunks double
    load_threads: int = 8
    quiet: bool = False


@dataclass(frozen=True)
class Scorer:
    """One scorer: its options class, its program (a module whose `score(options, log)` scores in this process and
    returns the metrics it wrote; for a scorer that spreads, `python -m` runs it as each process), and whether it
    spreads over GPUs (one process per GPU: data parallel over evaluate.gpus, pipeline_stages, num_nodes). The
    programs import this module, not it them: it names them."""

    name: str
    options: type[ScoringJob]
    module: str
    spreads_over_gpus: bool

    def gpus_per_node(self, gpus: int) -> int:
        """GPUs of a node it uses when it scores on GPUs and evaluate.gpus is `gpus`."""
        return gpus if self.spreads_over_gpus else 1

    def processes(self, settings: EvaluateSettings) -> int:
        """Processes it starts on each node: one per GPU where it spreads, else one."""
        return self.gpus_per_node(settings.gpus) if settings.device != "cpu" else 1

    def takes(self, key: str) -> bool:
        """Whether its options have the evaluate key `key` (a key it lacks is one it cannot honour)."""
        return key in {f.name for f in dataclasses.fields(self.options)}

    def problem(self, settings: EvaluateSettings) -> str | None:
        """What it cannot do with these settings, or None."""
        spreading = " or ".join(s.name for s in SCORERS.values() if s.spreads_over_gpus)
        single = ", ".join(s.name for s in SCORERS.values() if not s.spreads_over_gpus)
        if settings.pipeline_stages > 1 and not self.spreads_over_gpus:
            return (f"pipeline_stages {settings.pipeline_stages} needs scorer {spreading} (the {self.name} scorer"
                    f" uses one device)")
        if settings.float8 and not self.takes("float8"):
            with_float8 = " or ".join(s.name for s in SCORERS.values() if s.takes("float8"))
            return f"float8 needs scorer {with_float8} (the {self.name} scorer has no float8 path)"
        if settings.num_nodes > 1 and (not self.spreads_over_gpus or settings.device == "cpu"):
            return (f"num_nodes {settings.num_nodes} needs scorer {spreading} on GPUs (the {single} scorer, and a"
                    f" scorer on device cpu, use one process)")
        return None

    def command(self, settings: EvaluateSettings, options: ScoringJob, launch: dict | None) -> list[str] | None:
        """Its processes' command line, or None where it runs in this process. Over several nodes `launch`
        (llmhpc.cluster.launch.plan's answer) starts them; on one, torchrun."""
        if self.processes(settings) == 1:
            return None
        program = ["-m", self.module, "--options", options.to_json()]
        if settings.num_nodes > 1:  # the site's launcher, as the fine-tune's (mpirun, srun, or one torchrun per node)
            return [*(launch or {})["prefix"], sys.executable, *program]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={self.processes(settings)}", *program]

    def run(self, settings: EvaluateSettings, job: ScoringJob, launch: dict | None = None, log=print) -> dict:
        """Score `job` with these settings (the options built here, once); the metrics it wrote."""
        options = self.options.from_settings(settings, job)
        command = self.command(settings, options, launch)
        if command is None:
            return importlib.import_module(self.module).score(options, log)
        log("running: " + " ".join(command))
        proc = subprocess.run(command)
        if proc.returncode != 0:
            raise RuntimeError(f"the {self.name} scorer exited with {proc.returncode} (its output is above in this log)")
        return json.loads(Path(job.metrics).read_text())


REFERENCE = Scorer("reference", ReferenceOptions, "llmhpc.eval.reference", spreads_over_gpus=False)
FAST = Scorer("fast", FastOptions, "llmhpc.eval.run", spreads_over_gpus=True)
SCORERS = {scorer.name: scorer for scorer in (REFERENCE, FAST)}


def gpus_per_node(evaluate: dict) -> int:
    """GPUs of a node the scorer of an evaluate section (a dict, maybe partial) uses on GPUs; 1 where it names
    none."""
    scorer = SCORERS.get(evaluate.get("scorer"))
    return scorer.gpus_per_node(int(evaluate.get("gpus", 1))) if scorer else 1
