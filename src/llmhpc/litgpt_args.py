"""The keys a fine-tune's YAML may hold, so that `finetune.extra` (merged verbatim into that YAML) is checked when the
config is parsed, not 88 s into the GPU job where jsonargparse would refuse it.

What LitGPT accepts is `litgpt finetune_full` / `finetune_lora`'s `setup()` signature (the YAML's top level) and the
dataclasses of its sections (TrainArgs, EvalArgs, LogArgs, the JSON data module's init_args); the fsdp2 engine reads
the same YAML plus its `engine:` switches (llmhpc.train.fsdp2.args.EngineArgs). The names are tables here, not read
from LitGPT at parse time: importing litgpt imports torch (seconds of every `snakemake -n`). `generate()` reads them
from the installed LitGPT and the engine; tests/test_litgpt_args.py holds the tables to it, and
`python -m llmhpc.litgpt_args` prints them after an upgrade.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmhpc.train.registry import Engine

LITGPT_VERSION = "0.5.13"
# Top-level keys: the parameters of litgpt.finetune.full.setup and litgpt.finetune.lora.setup.
SETUP = {
    "full": ("checkpoint_dir", "out_dir", "precision", "devices", "num_nodes", "resume", "data", "train", "eval", "log",
             "optimizer", "logger_name", "seed", "access_token"),
    "lora": ("checkpoint_dir", "out_dir", "precision", "quantize", "devices", "num_nodes", "lora_r", "lora_alpha",
             "lora_dropout", "lora_query", "lora_key", "lora_value", "lora_projection", "lora_mlp", "lora_head", "data",
             "train", "log", "eval", "optimizer", "logger_name", "seed", "access_token"),
}
# Keys of the nested sections: litgpt.args.TrainArgs, EvalArgs, LogArgs, and litgpt.data.JSON's init arguments
# (the data module the workflow writes; another class_path has its own).
SECTIONS = {
    "train": ("save_interval", "log_interval", "global_batch_size", "micro_batch_size", "lr_warmup_steps",
              "lr_warmup_fraction", "epochs", "max_tokens", "max_steps", "max_time", "max_seq_length",
              "tie_embeddings", "max_norm", "min_lr"),
    "eval": ("interval", "max_new_tokens", "max_iters", "initial_validation", "final_validation", "evaluate_example"),
    "log": ("project", "run", "group", "teamspace", "metadata", "log_model", "save_logs", "checkpoint_name"),
    "data.init_args": ("json_path", "mask_prompt", "val_split_fraction", "prompt_style", "ignore_index", "seed",
                       "num_workers"),
    "optimizer": ("class_path", "init_args"),
    "data": ("class_path", "init_args"),
}
JSON_DATA = "litgpt.data.JSON"
# The optimizer's init_args: the keyword arguments of torch.optim's common optimizers (LitGPT passes init_args to the
# class; another class_path is not checked). A bare name ("AdamW") is torch.optim's, as LitGPT reads it.
OPTIMIZERS = {
    "torch.optim.AdamW": ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach", "capturable",
                          "differentiable", "fused"),
    "torch.optim.Adam": ("lr", "betas", "eps", "weight_decay", "amsgrad", "foreach", "maximize", "capturable",
                         "differentiable", "fused", "decoupled_weight_decay"),
    "torch.optim.SGD": ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "foreach",
                        "differentiable", "fused"),
}
# The fsdp2 engine's `engine:` switches: the fields of llmhpc.train.fsdp2.args.EngineArgs.
ENGINE = ("packing", "micro_rows", "activation_checkpointing", "sharding", "compile", "compile_shapes", "fused_adamw",
          "cross_entropy", "loss_weighting", "prefetch", "fast_save", "attention", "memory_fraction", "method",
          "float8", "float8_all_gather")


def generate() -> dict:
    """The tables above, read from the installed LitGPT and the fsdp2 engine (imports torch: tests and upgrades only)."""
    import dataclasses
    import inspect

    import litgpt
    import torch.optim
    from litgpt.args import EvalArgs, LogArgs, TrainArgs
    from litgpt.data import JSON
    from litgpt.finetune import full, lora

    from llmhpc.train.fsdp2.args import EngineArgs

    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.init)

    def keywords(path: str) -> tuple[str, ...]:
        return tuple(p for p in inspect.signature(getattr(torch.optim, path.rpartition(".")[2])).parameters
                     if p != "params")

    return {
        "LITGPT_VERSION": litgpt.__version__ if hasattr(litgpt, "__version__") else None,
        "SETUP": {m: tuple(inspect.signature(mod.setup).parameters) for m, mod in (("full", full), ("lora", lora))},
        "SECTIONS": {"train": names(TrainArgs), "eval": names(EvalArgs), "log": names(LogArgs),
                     "data.init_args": names(JSON), "optimizer": SECTIONS["optimizer"], "data": SECTIONS["data"]},
        "ENGINE": names(EngineArgs),
        "OPTIMIZERS": {path: keywords(path) for path in OPTIMIZERS},
    }


def _refusal(name: str, key: str, allowed, what: str) -> str:
    hint = difflib.get_close_matches(key, list(allowed), n=1)
    did = f" (did you mean '{hint[0]}'?)" if hint else ""
    return f"config key '{name}': not a key of {what}{did}; expected one of: {', '.join(allowed)}"


def problems(extra: dict, method: str, engine: Engine, where: str = "finetune.extra") -> list[str]:
    """Each key of `extra` (nested as in the YAML) that `engine` (llmhpc.train.registry's) running `method` would
    refuse or ignore, named in full (`finetune.extra.train.max_step`) with a did-you-mean."""
    layout = "full" if method == "full" else "lora"
    tool = engine.yaml_reader(method)
    top = SETUP[layout]
    sections = SECTIONS
    if engine.resumes_adapters:  # resume for every method (stock finetune_lora has none)
        top = tuple(dict.fromkeys((*top, "resume")))
    if engine.own_options:  # its switches
        top, sections = tuple(dict.fromkeys((*top, "engine"))), dict(SECTIONS, engine=ENGINE)
    out = []
    for key, value in extra.items():
        if "." in str(key):  # "train.max_steps": jsonargparse reads YAML nested, so does deep_merge
            section, _, sub = str(key).partition(".")
            out.append(f"config key '{where}.{key}': a dotted key is not read; nest it: {{{section}: {{{sub}: ...}}}}")
            out += _section({sub: None}, section, sections, where, tool)
            continue
        if key not in top:
            out.append(_refusal(f"{where}.{key}", str(key), top, tool))
            continue
        if "qlora" in engine.methods and key == "quantize" and value is not None:
            out.append(f"config key '{where}.quantize': {engine.title(method)}'s QLoRA is finetune.method: qlora"
                       " (NF4); leave quantize unset")
        out += _section(value, key, sections, where, tool)
    return out


def _section(value, key: str, sections: dict, where: str, tool: str) -> list[str]:
    if key not in sections or not isinstance(value, dict):
        return []
    out = []
    for sub, inner in value.items():
        if sub not in sections[key]:
            out.append(_refusal(f"{where}.{key}.{sub}", str(sub), sections[key], f"{tool} section '{key}'"))
        elif key == "data" and sub == "init_args" and isinstance(inner, dict):
            if value.get("class_path", JSON_DATA) == JSON_DATA:  # another data module has other arguments
                out += _section(inner, "data.init_args", sections, where, tool)
        elif key == "optimizer" and sub == "init_args" and isinstance(inner, dict):
            path = str(value.get("class_path", "torch.optim.AdamW"))
            path = path if "." in path else f"torch.optim.{path}"
            for arg in inner if path in OPTIMIZERS else ():
                if arg not in OPTIMIZERS[path]:
                    out.append(_refusal(f"{where}.optimizer.init_args.{arg}", str(arg), OPTIMIZERS[path],
                                        f"{path}'s arguments"))
    return out


if __name__ == "__main__":
    import pprint

    pprint.pprint(generate(), width=120, sort_dicts=False)
