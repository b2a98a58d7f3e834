"""The run's settings: the LitGPT YAML that `litgpt finetune_full --config` reads, plus the engine's switches.

The YAML is parsed here without jsonargparse (start-up time); its sections become litgpt's own `TrainArgs` and
`EvalArgs` (litgpt/args.py, loaded without LitGPT's __init__ and its Lightning: llmhpc.litgpt_core) and the data
module (litgpt.data.JSON as json_data.py's, which imports no Lightning; any other, LitGPT's own), so the same
keys mean the same things as for stock LitGPT.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CHOICES = {
    "activation_checkpointing": ("auto", "on", "off"),
    "sharding": ("auto", "full", "grad_op", "none", "hybrid"),
    "cross_entropy": ("fused", "chunked"),
    "loss_weighting": ("micro_batch", "token"),
    "attention": ("auto", "flex", "sdpa"),
    "method": ("full", "lora", "dora", "qlora"),
    "float8_all_gather": ("auto", "on", "off"),
    "compile_shapes": ("auto", "static", "dynamic"),
}


@dataclass
class EngineArgs:
    """The `engine:` mapping of the YAML. Defaults are the fastest settings; each switch turns one method off."""

    packing: bool = True  # pack each optimizer step's samples into rows of max_seq_length (document-masked)
    micro_rows: int | str = "auto"  # rows (packed) per micro batch per GPU; auto: from a memory estimate
    activation_checkpointing: str = "auto"  # off / on / auto (on only where the memory estimate says it must)
    sharding: str = "auto"  # full (FSDP2) / grad_op (no reshard after forward) / none (DDP) / hybrid; auto:
    #                         grad_op on one node, hybrid (shard in a node, replicate across nodes) on several
    compile: bool | str = "auto"  # torch.compile of each transformer block: true, false, or auto (where the planned
    #                               training pays back the compile: compile_choice.py)
    compile_shapes: str = "auto"  # static: one graph per micro-batch shape, so a whole-tensor reduction such as
    #                               float8's amax gets kernels sized for its shape (shape-generic, one took 0.9 ms a
    #                               layer on 4 x H200, 8B); dynamic: shape-generic graphs from the second shape on
    #                               (a compile less per extra shape); auto: static for packed float8 runs
    fused_adamw: bool = True  # AdamW(fused=True) on CUDA
    cross_entropy: str = "chunked"  # chunked: lm_head + CE per 4096 tokens, recomputed in backward (never the
    #                                 full logits); fused: liger-kernel's fused linear cross-entropy
    loss_weighting: str = "micro_batch"  # micro_batch: stock's objective exactly; token: mean over the step's tokens
    prefetch: bool = True  # build, pin and copy the next micro batches in a background thread
    fast_save: bool = True  # final checkpoint written by a background thread while validation runs
    attention: str = "auto"  # auto: flex_attention on CUDA, SDPA with an explicit mask elsewhere
    memory_fraction: float = 0.85  # share of the GPU's memory the estimate may plan for
    method: str = "full"  # full / lora / dora / qlora (LoRA over an NF4 base); the adapters' settings are the
    #                       top-level lora_* keys of `litgpt finetune_lora`
    float8: bool = False  # torchao float8 training of the Linear layers (GPUs of compute capability >= 8.9)
    float8_all_gather: str = "auto"  # FSDP2 gathers float8 weights (half the bytes; eager casts each gather);
    #                                  auto: only over several nodes, where the traffic is what costs

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if isinstance(value, bool):  # YAML reads on/off as booleans
                value = "on" if value else "off"
                setattr(self, name, value)
            if value not in allowed:
                raise ValueError(f"engine.{name}: {value!r} is not one of {', '.join(allowed)}")
        if self.micro_rows != "auto" and (not isinstance(self.micro_rows, int) or self.micro_rows < 1):
            raise ValueError(f"engine.micro_rows: {self.micro_rows!r} is neither 'auto' nor a positive integer")
        if self.compile not in (True, False, "auto") or not isinstance(self.compile, (bool, str)):
            raise ValueError(f"engine.compile: {self.compile!r} is none of true, false, auto")
        if not isinstance(self.float8, bool):
            raise ValueError(f"engine.float8: {self.float8!r} is not true or false")
        if self.float8 and self.method == "qlora":
            raise ValueError("engine.float8: the qlora base weights are NF4, not float8; use method lora or full")


@dataclass
class LoraArgs:
    """The top-level lora_* keys of `litgpt finetune_lora` (its defaults): rank, alpha (the update is scaled by
    alpha / r), dropout on the adapter's input, and which weights get an adapter."""

    r: int = 8
    alpha: float = 16
    dropout: float = 0.05
    query: bool = True
    key: bool = False
    value: bool = True
    projection: bool = False
    mlp: bool = False
    head: bool = False

    @classmethod
    def from_yaml(cls, raw: dict, method: str) -> LoraArgs:
        keys = {f.name for f in dataclasses.fields(cls)}
        given = {k[len("lora_"):]: raw[k] for k in list(raw) if k.startswith("lora_")}
        unknown = sorted(set(given) - keys)
        if unknown:
            raise ValueError(f"lora_{unknown[0]}: not a key of litgpt finetune_lora (lora_{', lora_'.join(sorted(keys))})")
        lora = cls(**given)
        if method != "full":
            if not isinstance(lora.r, int) or lora.r < 1:
                raise ValueError(f"lora_r: {lora.r!r} is not a positive integer")
            if not 0 <= lora.dropout < 1:
                raise ValueError(f"lora_dropout: {lora.dropout!r} is not in [0, 1)")
            if not any((lora.query, lora.key, lora.value, lora.projection, lora.mlp, lora.head)):
                raise ValueError(f"engine.method {method}: no lora_query/key/value/projection/mlp/head is true")
        return lora


@dataclass
class RunArgs:
    """What `litgpt finetune_full` takes, with litgpt's own argument classes."""

    checkpoint_dir: Path
    out_dir: Path
    precision: str
    devices: int
    num_nodes: int
    data: Any  # a litgpt DataModule
    train: Any  # litgpt.args.TrainArgs
    eval: Any  # litgpt.args.EvalArgs
    optimizer: dict
    seed: int
    logger_name: str
    engine: EngineArgs = field(default_factory=EngineArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    litgpt_yaml: dict = field(default_factory=dict)  # the YAML without `engine:` (saved as stock would)
    resume: bool | str = False  # stock's meaning: auto (the newest step checkpoint in out_dir, if any), true, a folder


def data_class(class_path: str):
    """The data module's class: the engine's own JSON (json_data.py, no Lightning) for litgpt.data.JSON, LitGPT's
    own class otherwise (LitGPT's data modules import Lightning: a run that names one needs it)."""
    from llmhpc.train.fsdp2 import json_data

    if class_path in json_data.CLASS_PATHS:
        return json_data.JSON
    module, _, name = (class_path if "." in class_path else f"litgpt.data.{class_path}").rpartition(".")
    return getattr(importlib.import_module(module), name)


def instantiate(spec: dict | str) -> Any:
    """A `class_path` + `init_args` mapping as jsonargparse would build it (str fields typed Path become Paths)."""
    if isinstance(spec, str):
        spec = {"class_path": spec}
    cls = data_class(spec["class_path"])
    kwargs = dict(spec.get("init_args") or {})
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name in kwargs and isinstance(kwargs[f.name], str) and "Path" in str(f.type):
                kwargs[f.name] = Path(kwargs[f.name])
    return cls(**kwargs)


def load(path: str | Path) -> RunArgs:
    from llmhpc import litgpt_core

    litgpt_core.load()  # LitGPT's pure modules (args, config, prompts, tokenizer) without its __init__'s Lightning
    from litgpt.args import EvalArgs, TrainArgs

    raw = yaml.safe_load(Path(path).read_text()) or {}
    engine = EngineArgs(**(raw.pop("engine", None) or {}))
    if raw.get("quantize") is not None:
        raise ValueError("quantize: the fsdp2 engine's QLoRA is engine.method: qlora (torchao NF4); leave quantize unset")
    resume = raw.get("resume", False)
    if not (resume in (None, False, True, "auto") or isinstance(resume, str)):
        raise ValueError(f"resume: {resume!r} is none of false, true, auto or a step checkpoint folder")
    if raw.get("devices") in ("auto", -1):
        import torch

        raw["devices"] = max(1, torch.cuda.device_count())
    optimizer = raw.get("optimizer", "AdamW")
    if isinstance(optimizer, str):
        optimizer = {"class_path": f"torch.optim.{optimizer}", "init_args": {}}
    return RunArgs(
        checkpoint_dir=Path(raw["checkpoint_dir"]),
        out_dir=Path(raw.get("out_dir", "out/finetune/full")),
        precision=raw.get("precision") or "bf16-true",
        devices=int(raw.get("devices", 1)),
        num_nodes=int(raw.get("num_nodes", 1)),
        data=instantiate(raw.get("data") or "Alpaca"),
        train=TrainArgs(**(raw.get("train") or {})),
        eval=EvalArgs(**(raw.get("eval") or {})),
        optimizer=optimizer,
        seed=int(raw.get("seed", 1337)),
        logger_name=raw.get("logger_name", "csv"),
        engine=engine,
        lora=LoraArgs.from_yaml(raw, engine.method),
        litgpt_yaml=raw,
        resume=resume or False,
    )
