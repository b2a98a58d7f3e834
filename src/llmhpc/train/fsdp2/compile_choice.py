"""Whether this job compiles its transformer blocks (engine.compile: auto), from the work it plans.

Compiling costs its warm-up (the blocks' forward and backward, before the first step) and pays back as faster
steps, so it pays only where the training is long enough: a 7B full fine-tune on 1 x H100 of 1024 Alpaca records
(~30 s of eager training at the rate below) is faster compiled, the ISC25 example's LoRA jobs on one GPU (under a
second) are not. The planned eager training time per GPU is the run's FLOPs (the MFU formula of
llmhpc.train.metrics over the tokens the plan computes, padding included) at EAGER_TFLOPS; compiling is chosen
from COMPILE_PAYS_S of it, or from COMPILE_PAYS_WARM_S where torch's compile cache already holds compiled graphs
(a rerun, or an earlier experiment of the same shape: the warm-up is mostly loading them). true and false are
obeyed as given.
"""

from __future__ import annotations

import getpass
import os
import tempfile
from pathlib import Path

EAGER_TFLOPS = 300.0  # assumed eager bf16 training rate of one GPU (H100 class: ~40 % of its dense peak)
COMPILE_PAYS_S = 15.0  # planned eager training per GPU from which compiling pays back its cold warm-up
COMPILE_PAYS_WARM_S = 5.0  # the same with a warm compile cache


def decide(setting, device_type: str, planned_s: float, warm_cache: bool) -> tuple[bool, str]:
    """(compile?, why) for engine.compile `setting` (True, False or "auto")."""
    if device_type != "cuda" and os.environ.get("LLMHPC_FSDP2_COMPILE_CPU") != "1":
        return False, f"eager: on {device_type}, compiling costs more than it saves (engine.compile {setting})"
    if setting is True:
        return True, "compile: engine.compile true"
    if setting is False:
        return False, "eager: engine.compile false"
    threshold = COMPILE_PAYS_WARM_S if warm_cache else COMPILE_PAYS_S
    cache = "a warm compile cache" if warm_cache else "a cold compile cache"
    if planned_s < threshold:
        return False, (f"eager: ~{planned_s:.1f} s of eager training planned per GPU, under the {threshold:g} s "
                       f"from which compiling pays back with {cache}")
    return True, (f"compile: ~{planned_s:.1f} s of eager training planned per GPU, over the {threshold:g} s from "
                  f"which compiling pays back with {cache}")


def planned_seconds(tokens: int, flops_per_token: float, world_size: int) -> float:
    """Eager training seconds per GPU: the run's computed tokens x FLOPs per token, shared by the GPUs."""
    return tokens * flops_per_token / max(1, world_size) / (EAGER_TFLOPS * 1e12)


def warm_cache() -> bool:
    """Whether Inductor's cache (TORCHINDUCTOR_CACHE_DIR, or torch's default under the temporary directory)
    holds compiled graphs. Which ones is not known until they are asked for: a cache warmed by another model's
    shape counts as warm too."""
    root = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not root:
        try:
            root = os.path.join(tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}")
        except (KeyError, OSError):  # no user name for this uid (some containers): torch's default is unknown
            return False
    graphs = Path(root) / "fxgraph"
    return graphs.is_dir() and any(graphs.iterdir())
