"""Model converters, applied in one place to the GPT on the meta device, before compile and sharding (as
torchtitan's `model.converters`): the adapters of engine.method (adapters.py) and float8 training (torchao).

float8 swaps the Linear layers for torchao's Float8Linear (dynamic tensorwise scales, matmuls through
`torch._scaled_mm` in e4m3 forward, e5m2 gradients; weights and optimizer stay in the training dtype). lm_head
stays in bf16 (its logits feed the loss directly and float8 costs it accuracy), and so does any layer whose
dimensions are not multiples of 16 (what `_scaled_mm` takes). Adapted layers keep their bf16 path.
"""

from __future__ import annotations

import torch
from torch import nn

from llmhpc.litgpt_checkpoint import float8_problem
from llmhpc.train.fsdp2 import adapters


def check_float8(device: torch.device) -> None:
    if problem := float8_problem(device, "engine.float8", "training"):
        raise RuntimeError(problem)


def float8_eligible(module: nn.Module, fqn: str) -> bool:
    return (type(module) is nn.Linear and fqn.rpartition(".")[2] != "lm_head"
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def convert_float8(gpt, fsdp_all_gather: bool = False, emulate: bool = False) -> int:
    """`fsdp_all_gather`: FSDP2 gathers the sharded weights already cast to float8 (half the bytes of bf16; the
    scales from `precompute_float8_scales` after each optimizer step), as torchtitan does. `emulate`: float8
    arithmetic emulated in higher precision (tests on CPU)."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    before = sum(type(m) is nn.Linear for m in gpt.modules())
    config = Float8LinearConfig(enable_fsdp_float8_all_gather=fsdp_all_gather, emulate=emulate)
    convert_to_float8_training(gpt, config=config, module_filter_fn=float8_eligible)
    return before - sum(type(m) is nn.Linear for m in gpt.modules())


def gathers_float8(engine, fsdp: bool, nodes: int) -> bool:
    """Whether FSDP2 all-gathers the float8 weights in float8 (engine.float8_all_gather; auto: over several nodes,
    where halving the traffic is what counts). Within a node it buys nothing measurable: on 2 x H200 the steady
    step was 0.83x bf16's with it and 0.82x without (two device runs), and its eager casts of each weight at each gather
    (4 a step with full sharding over 2 micro batches) add ~0.5 s of kernel time a step on the gather stream."""
    choice = engine.float8_all_gather
    return bool(engine.float8 and fsdp and (choice == "on" or choice == "auto" and nodes > 1))


def precompute_float8_scales(module) -> None:
    """One amax all-reduce for every float8 weight's scale, for the next all-gathers (after an optimizer step)."""
    from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp

    precompute_float8_dynamic_scale_for_fsdp(module)


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """The bf16 tensor inside torchao's float8 all-gather weight wrapper (checkpoints hold plain tensors)."""
    return getattr(tensor, "_tensor", tensor) if type(tensor).__name__ == "WeightWithDynamicFloat8CastTensor" \
        else tensor


def convert(gpt, run, device: torch.device, float8_all_gather: bool = False) -> list[str]:
    """Apply engine.method's adapters, then float8 (`float8_all_gather`: FSDP2 all-gathers the sharded weights in
    float8, see gathers_float8). Returns what was done, for the settings line."""
    done = []
    method = run.engine.method
    if method != "full":
        n = adapters.attach(gpt, gpt.config, run.lora, method)
        lora = run.lora
        targets = [k for k in ("query", "key", "value", "projection", "mlp", "head") if getattr(lora, k)]
        done.append(f"{method} on {n} layers (r={lora.r} alpha={lora.alpha:g} dropout={lora.dropout:g} "
                    f"targets={'+'.join(targets)})")
    if run.engine.float8:
        check_float8(device)
        done.append(f"float8 on {convert_float8(gpt, fsdp_all_gather=float8_all_gather)} Linear layers"
                    + (", all-gathered in float8" if float8_all_gather else ""))
    return done
