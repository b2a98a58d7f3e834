"""Float8 scoring (evaluate.float8): the transformer blocks' linear layers run their matrix products in float8
through torchao's rowwise dynamic scaling (Float8DynamicActivationFloat8WeightConfig with PerRow: each weight row
scaled once at load, each activation row at every call). The embedding, the norms, attention's softmax and the
output layer stay in bf16, so the log-likelihoods keep their float32 log-softmax. It needs FP8 tensor cores
(compute capability 8.9 or newer) and moves the scores slightly: evaluate.reference_metrics holds them to
tolerance_pt of a bf16 run. torchao is imported only when a run asks for float8."""

from __future__ import annotations

import torch

from llmhpc.litgpt_checkpoint import float8_problem


def problem(device, precision: str) -> str | None:
    """Why this process cannot score in float8 on `device` at `precision`, naming the key; None when it can."""
    if why := float8_problem(device, "evaluate.float8", "scoring"):
        return why
    if precision != "bf16-true":
        return (f"evaluate.float8 keeps bf16 outside the linear layers, but the precision is {precision}: set"
                f" evaluate.precision to bf16-true or auto")
    return None


def eligible(module: torch.nn.Module, fqn: str = "") -> bool:
    """A linear layer whose two dimensions float8's matrix product takes (multiples of 16); others stay bf16."""
    return (isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0
            and module.out_features % 16 == 0)


def quantize_blocks(blocks) -> int:
    """Swap the weights of the blocks' eligible linear layers for torchao's float8 ones in place; how many."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    n = 0
    for block in blocks:
        n += sum(eligible(m) for m in block.modules())
        quantize_(block, config, filter_fn=eligible)
    return n


def import_ahead() -> None:
    """torchao's quantization modules imported in this thread, before a compile warm-up thread quantizes its
    stand-in block: two threads importing one package's import cycle can see a module half made (the scorer's
    Dynamo import crash of 2026-12-07)."""
    import torchao.quantization  # noqa: F401
