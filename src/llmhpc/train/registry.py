"""The fine-tune engines `finetune.engine` names, looked up here once: each entry owns its program and command,
what it can do (the config check, the preflight and the stage ask it), what its YAML holds beyond config_hub's
and how its CSV log counts time.

    litgpt  stock LitGPT 0.5.x, `litgpt finetune_full` / `finetune_lora` (through llmhpc.train.stock_run)
    fsdp2   the workflow's engine: FSDP2, packing, compile, every LoRA-family method and float8 (llmhpc.train.fsdp2)

Both read one file, the LitGPT YAML the finetune config rule writes from the typed settings
(llmhpc.train.litgpt.litgpt_config): it is the options' one crossing of the process boundary, a file a person can
rerun by hand and the submission carries; the fsdp2 engine reads it into its own typed arguments
(llmhpc.train.fsdp2.args). No other module compares engine names. Light to import (no torch): the workflow reads it
at parse time."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmhpc.settings import FinetuneSettings

# finetune.<key>s that the fsdp2 engine's YAML carries in its `engine:` section beside engine_options: they are what
# the experiment is (its method, its FP8), not one of the engine's speed switches.
ENGINE_KEYS_FROM_FINETUNE = ("method", "float8")


@dataclass(frozen=True)
class Engine:
    """One engine: its program, the methods it runs (and why not the others), whether it trains in float8, what
    its YAML and its logs hold, and what the stage and the preflight do for it. `{method}` in a text is the
    experiment's finetune.method; `{layout}` full or lora, config_hub's two YAML layouts."""

    name: str
    program: str  # after `python`, before `--config <yaml>`
    by_hand: str  # what a person types instead, before `--config <yaml>`
    called: str  # what a log line or an error calls a run of it
    release: str  # whose code, which version
    reader: str  # who reads its YAML's keys (a refusal of one it does not know names it)
    methods: tuple[str, ...]
    lacks: dict  # a method it does not run, or "float8": what it has instead (the refusal says so)
    own_options: bool  # finetune.engine_options reach it, in its YAML's `engine:` section
    resumes_adapters: bool  # an adapter run's YAML keeps `resume:` (stock finetune_lora has no such argument)
    plans_saves: bool  # it plans its step checkpoints against the job's walltime itself (else the stage does)
    iter_time_per_step: bool  # its CSV log's iter_time is an optimizer step's (stock: one micro batch's)
    predicts_memory: bool  # the preflight predicts its per-GPU peak (llmhpc.train.memory) and refuses a misfit

    def command(self, method: str, config_path, launcher: list[str] | None = None) -> list[str]:
        """Its command via this Python, behind an optional launcher (mpirun, srun, pernode)."""
        return [*(launcher or []), sys.executable, *self.program.format(method=method).split(), "--config",
                str(config_path)]

    def run_line(self, method: str, config_path) -> str:
        """The command a person types to run the YAML by hand."""
        return f"{self.by_hand.format(method=method)} --config {config_path}"

    def title(self, method: str) -> str:
        return self.called.format(method=method)

    def yaml_reader(self, method: str) -> str:
        return self.reader.format(layout="full" if method == "full" else "lora")

    def options(self, settings: FinetuneSettings) -> dict:
        """The `engine:` section of its YAML (empty where it reads none): engine_options, method and float8."""
        if not self.own_options:
            return {}
        return {**settings.engine_options, **{key: getattr(settings, key) for key in ENGINE_KEYS_FROM_FINETUNE}}

    def iter_time_s(self, row_iter_time: float, accumulation: int) -> float:
        """One micro batch's time from a CSV row's iter_time."""
        return row_iter_time / accumulation if self.iter_time_per_step else row_iter_time

    @property
    def float8(self) -> bool:
        return "float8" not in self.lacks

    def problem(self, settings: FinetuneSettings) -> str | None:
        """What this engine cannot do with these settings, or None (what no engine can: the settings' own)."""
        runs_all = " or ".join(e.name for e in ENGINES.values() if settings.method in e.methods)
        if settings.method not in self.methods:
            return (f"method {settings.method!r} needs engine {runs_all}: {self.lacks[settings.method]};"
                    f" set engine: {runs_all}")
        if settings.float8 and not self.float8:
            fp8 = " or ".join(e.name for e in ENGINES.values() if e.float8)
            return f"float8 needs engine {fp8}: {self.lacks['float8']}; set engine: {fp8}"
        options = self.options(settings)
        if options.get("compile_shapes") == "static" and options.get("packing") is False:
            return ("engine_options compile_shapes static with packing false: an unpacked run has a shape per"
                    " longest sample, each a compile of every block (during training, past the warm-up); use"
                    " compile_shapes auto or dynamic, or packing true")
        return None


STOCK = Engine(
    "litgpt", program="-m llmhpc.train.stock_run finetune_{method}", by_hand="litgpt finetune_{method}",
    called="litgpt finetune_{method}", release="LitGPT 0.5.x", reader="litgpt finetune_{layout}",
    methods=("full", "lora"),
    lacks={"dora": "stock litgpt 0.5.x has no DoRA",
           "qlora": "stock litgpt 0.5.x has a bitsandbytes QLoRA that refuses more than one GPU",
           "float8": "stock litgpt 0.5.x has no FP8 training"},
    own_options=False, resumes_adapters=False, plans_saves=False, iter_time_per_step=False, predicts_memory=False)
FSDP2 = Engine(
    "fsdp2", program="-m llmhpc.train.fsdp2", by_hand="python -m llmhpc.train.fsdp2", called="the fsdp2 engine",
    release="this workflow's", reader="the fsdp2 engine's YAML (litgpt finetune_{layout}'s)",
    methods=("full", "lora", "dora", "qlora"), lacks={},
    own_options=True, resumes_adapters=True, plans_saves=True, iter_time_per_step=True, predicts_memory=True)
ENGINES = {engine.name: engine for engine in (STOCK, FSDP2)}


def of(settings: FinetuneSettings | dict) -> Engine:
    """The engine an experiment's finetune settings (typed, or the dict the rules pass) name."""
    if isinstance(settings, dict):
        from llmhpc.settings import FinetuneSettings

        settings = FinetuneSettings.from_dict(settings)
    return ENGINES[settings.engine]

