"""What `litgpt finetune_full` does around its training loop, without Lightning: its argument check, LR schedule,
optimizer and performance report.

These live in litgpt/finetune/full.py and litgpt/utils.py, which import Lightning at the top (and with it
torchmetrics and transformers: seconds of every job's start-up). Each function here does what LitGPT's does, and
a test compares the two on the same input.
"""

from __future__ import annotations

import importlib
import inspect

import torch


def validate_args(train, eval) -> None:  # noqa: A002 - LitGPT's name for the section
    """finetune_full's refusals: what it does not support, what it requires."""
    issues = []
    for name in ("max_tokens", "max_norm", "tie_embeddings", "lr_warmup_fraction"):
        if getattr(train, name) is not None:
            issues.append(f"train.{name}: litgpt finetune_full does not support it (set it to null)")
    if train.epochs is None:
        issues.append("train.epochs: litgpt finetune_full requires it")
    if eval.max_new_tokens is None:
        issues.append("eval.max_new_tokens: litgpt finetune_full requires it")
    if not train.epochs and not train.max_steps:
        issues.append("train.epochs / train.max_steps: litgpt finetune_full requires one of them")
    if issues:
        raise ValueError("\n".join(issues))


def lr_scheduler(optimizer, warmup_steps: int, max_steps: int):
    """Linear warm-up, then cosine annealing (finetune_full's get_lr_scheduler)."""
    warm = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: step / warmup_steps)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_steps - warmup_steps)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cosine], milestones=[warmup_steps])


def optimizer(spec: str | dict, parameters, **extra):
    """The optimizer of the YAML's `optimizer:` (a class name of torch.optim, a dotted path, or class_path +
    init_args) over `parameters`; `extra` keywords only where the class takes them (litgpt's
    instantiate_torch_optimizer)."""
    if isinstance(spec, str):
        path, init_args = (spec if "." in spec else f"torch.optim.{spec}"), {}
    elif isinstance(spec, dict) and "class_path" in spec:
        path, init_args = spec["class_path"], dict(spec.get("init_args") or {})
    else:
        raise ValueError(f"optimizer: {spec!r} is neither a class name nor a class_path/init_args mapping")
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    taken = set(inspect.signature(cls).parameters)
    return cls(parameters, **{**init_args, **{k: v for k, v in extra.items() if k in taken}})


def performance_report(training_time: float, token_counts: dict, device_type: str) -> str:
    """litgpt's create_finetuning_performance_report, line for line (the stage reads these lines)."""
    tok_sec = token_counts["raw_tokens_plus_prompt_template_and_padding"] / training_time
    output = f"""
| ------------------------------------------------------
| Token Counts
| - Input Tokens              :  {token_counts["raw_tokens"]:>5}
| - Tokens w/ Prompt          :  {token_counts["raw_tokens_plus_prompt_template"]:>5}
| - Total Tokens (w/ Padding) :  {token_counts["raw_tokens_plus_prompt_template_and_padding"]:>5}
| -----------------------------------------------------
| Performance
| - Training Time             :  {training_time:.2f} s
| - Tok/sec                   :  {tok_sec:.2f} tok/s
| -----------------------------------------------------
"""
    if device_type == "cuda":
        memory_used = torch.cuda.max_memory_allocated() / 1e9
        output += "| Memory Usage                                                                 \n"
        output += f"| - Memory Used               :  {memory_used:.02f} GB                                        \n"
    output += "-------------------------------------------------------\n"
    return output
