"""Typed settings: what the config check turns each section into, once, and what the stages read.

The config travels between Snakemake and the jobs as plain dicts (rule params must serialise the same way on every
parse); every module that computes with it builds one of these frozen dataclasses from that dict with
`from_dict`, which refuses a key the dataclass does not know. The batch arithmetic lives here and nowhere else:
the refusal in llmhpc.config, the LitGPT YAML, the fine-tune summary and the plots all call it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def _from_dict(cls, data: dict, section: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise KeyError(f"{section}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
    return cls(**values)


def _with_defaults(cls, data: dict, section: str) -> dict:
    """`data` and, for each field it leaves out, the schema's default."""
    missing = {f.name for f in dataclasses.fields(cls)} - set(data)
    defaults = schema_defaults(section) if missing else {}
    return {**{k: copy.deepcopy(defaults[k]) for k in missing}, **data}  # a default list or dict is each's own


@functools.cache
def schema_defaults(section: str) -> dict:
    """The schema's default of every key of a config section: the one place defaults are written."""
    import yaml

    with open(SCHEMA, encoding="utf-8") as fh:
        schema = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {key: sub["default"] for key, sub in schema["properties"][section]["properties"].items()}


# Methods that train adapters over frozen base weights.
LORA_FAMILY = ("lora", "dora", "qlora")
# What finetune.float8 and evaluate.float8 need: FP8 tensor cores (Ada, Hopper and newer; A100 is 8.0, V100 7.0).
FLOAT8_CAPABILITY = (8, 9)
FLOAT8_GPUS = "compute capability 8.9 or newer: H100, H200, L4, L40, B100, B200"


@dataclass(frozen=True)
class FinetuneSettings:
    """One experiment's fine-tune (workflow/schemas/config.schema.yaml, section `finetune`, describes each key).
    No defaults here: a key the dict leaves out takes the schema's default. Which engine runs it, and what that
    engine can do, is llmhpc.train.registry's."""

    method: str
    float8: bool
    engine: str
    engine_options: dict
    precision: str
    devices: int
    num_nodes: int
    global_batch_size: int
    micro_batch_size: int
    epochs: int
    max_steps: int | None
    max_seq_length: int
    learning_rate: float
    min_lr: float
    weight_decay: float
    lr_warmup_steps: int
    seed: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_targets: tuple[str, ...]
    betas: tuple[float, ...]
    max_norm: float | None
    log_interval: int
    save_interval: int
    save_walltime_share: float
    resume: str | bool
    eval_interval: int
    eval_max_iters: int
    eval_max_new_tokens: int
    initial_validation: bool
    final_validation: bool
    prompt_style: str
    mask_prompt: bool
    ignore_index: int
    data_seed: int
    data_num_workers: int
    launch_env: dict
    extra: dict

    @classmethod
    def from_dict(cls, data: dict) -> FinetuneSettings:
        return _from_dict(cls, _with_defaults(cls, data, "finetune"), "finetune")

    # --- batch arithmetic (LitGPT >= 0.5.8: the global batch is split over devices * num_nodes) ---------------
    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def per_rank(self) -> int:
        """Samples each rank contributes to one optimizer step."""
        return self.global_batch_size // self.world_size

    @property
    def accumulation(self) -> int:
        """Micro batches per optimizer step on each rank (litgpt's gradient_accumulation_iters)."""
        return self.per_rank // self.micro_batch_size

    @property
    def samples_per_step(self) -> int:
        """Samples that actually make one optimizer step (the global batch, when the arithmetic is exact)."""
        return self.accumulation * self.micro_batch_size * self.world_size

    def batch_problem(self) -> str | None:
        """What LitGPT would do wrong with this batch arithmetic, or None."""
        ranks, mbs = self.world_size, self.micro_batch_size
        if self.per_rank == 0 or self.accumulation == 0:
            return (
                f"global_batch_size {self.global_batch_size} over devices {self.devices} x num_nodes {self.num_nodes}"
                f" = {ranks} ranks gives {self.per_rank} sample(s) per rank, fewer than micro_batch_size {mbs}:"
                f" litgpt would stop on `assert gradient_accumulation_iters > 0`. Raise global_batch_size to at"
                f" least {ranks * mbs} or lower micro_batch_size to {max(self.per_rank, 1)} or less"
            )
        if self.global_batch_size % (ranks * mbs):
            return (
                f"global_batch_size {self.global_batch_size} is not a multiple of devices x num_nodes x"
                f" micro_batch_size = {ranks * mbs}: litgpt would silently step every {self.samples_per_step}"
                f" samples. Make it a multiple of {ranks * mbs}"
            )
        return None

    @property
    def adapters(self) -> bool:
        """Whether the method trains LoRA-family adapters (lora, dora, qlora) rather than every weight."""
        return self.method in LORA_FAMILY

    def problem(self) -> str | None:
        """What cannot run with these settings whatever the engine, or None (the engine's own: its registry
        entry's `problem`, llmhpc.train.registry)."""
        if self.adapters and not self.lora_targets:
            return f"method {self.method} with lora_targets []: no weight gets an adapter, nothing would train"
        if self.float8 and self.method == "qlora":
            return ("float8 with method qlora: QLoRA's base weights are 4-bit NF4, which float8 matrix products do"
                    " not take; use method lora or dora with float8, or qlora without it")
        targets = set(self.lora_targets)
        if self.float8 and self.adapters and {"projection", "mlp"} <= targets and targets & {"query", "key", "value"}:
            # the fused qkv layer is adapted when any of query/key/value is, so every block Linear would be
            return (f"float8 with lora_targets {sorted(targets)}: float8 runs only the block layers without"
                    " adapters (an adapted layer and lm_head stay bf16), and these targets leave none, so float8"
                    " would change nothing; leave a layer kind out of lora_targets or set float8: false")
        return None

    def warmup_problem(self) -> str | None:
        """litgpt's cosine schedule runs for max_steps - lr_warmup_steps steps: zero or less divides by zero."""
        if self.max_steps is not None and self.lr_warmup_steps >= self.max_steps:
            return (f"lr_warmup_steps {self.lr_warmup_steps} must be below max_steps {self.max_steps}: litgpt's"
                    f" cosine schedule would have no steps left (ZeroDivisionError in the scheduler)")
        return None


@dataclass(frozen=True)
class EvaluateSettings:
    """How a checkpoint is scored (section `evaluate`). No defaults here: a key the dict leaves out takes the
    schema's default (the validated config has them all). Which scorer runs it, and what that scorer can do, is
    llmhpc.eval.registry's."""

    precision: str
    batch_size: int
    scorer: str
    bos: str
    device: str
    gpus: int
    num_nodes: int
    pipeline_stages: int
    token_budget: int
    compile: str
    reference_metrics: str | None
    tolerance_pt: float
    float8: bool

    def problem(self) -> str | None:
        """What cannot run with these settings whatever the scorer, or None (the scorer's own: its registry
        entry's `problem`)."""
        if self.float8 and (self.device == "cpu" or self.precision not in ("auto", "bf16-true")):
            return (f"float8 scores on GPUs with FP8 tensor cores, with bf16 outside the linear layers; device"
                    f" {self.device} and precision {self.precision} cannot: set float8: false, or device auto or"
                    f" cuda and precision auto or bf16-true")
        if self.gpus % self.pipeline_stages:
            return (f"gpus {self.gpus} is not a multiple of pipeline_stages {self.pipeline_stages}: each copy of the"
                    f" model takes pipeline_stages GPUs")
        return None

    @classmethod
    def from_dict(cls, data: dict) -> EvaluateSettings:
        return _from_dict(cls, _with_defaults(cls, data, "evaluate"), "evaluate")


@dataclass(frozen=True)
class Experiment:
    """A named experiment: its full fine-tune and evaluate settings (the shared ones with its overrides)."""

    name: str
    notes: str
    finetune: FinetuneSettings
    evaluate: EvaluateSettings

    @classmethod
    def from_dict(cls, data: dict) -> Experiment:
        return cls(name=data["name"], notes=data.get("notes", ""),
                   finetune=FinetuneSettings.from_dict(data["finetune"]),
                   evaluate=EvaluateSettings.from_dict(data["evaluate"]))


@dataclass(frozen=True)
class PresentationSettings:
    """What the slides say beyond the measured figures (section `presentation`)."""

    team: str = "Our team"
    members: tuple[str, ...] = ()
    title: str = "LLM fine-tuning on HPC: what we measured"
    event: str = ""
    workload: tuple[str, ...] = ()
    narrative: tuple[str, ...] = ()
    did_not_work: tuple[str, ...] = ()
    accuracy_tolerance: float = 0.01

    @classmethod
    def from_dict(cls, data: dict) -> PresentationSettings:
        return _from_dict(cls, data, "presentation")
