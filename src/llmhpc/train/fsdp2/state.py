"""What the fsdp2 engine's training holds while it runs: one typed object that the loop, validation, the step
checkpoints and the final save read, built in stages by engine.main (data first, then model and optimizer, then
the save plan where step checkpoints are on)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmhpc.train.fsdp2.distributed import World


@dataclass
class RunState:
    world: World
    precision: str
    samples: list  # data.Sample per training record, in the data module's order
    ignore: int  # the label of tokens that carry no loss
    val_samples: list = field(default_factory=list)
    attention: str = "sdpa"  # the attention backend the blocks run (attention.backend)
    model: Any = None  # the trainee as wrapped for training (FSDP2, DDP or plain)
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None  # fp16 mixed precision only (parallel.grad_scaler)
    float8_all_gather: bool = False
    # step checkpoints, where finetune.save_interval asks for them: the writer, which steps, and the signals that
    # make the run save and stop (SIGTERM, SIGUSR1)
    save_step: Callable[[int], Any] | None = None
    saves: Any = None  # save_plan.Schedule
    warned: Any = None  # step_checkpoint.Warned
    stopped: type[BaseException] | None = None  # step_checkpoint.Stopped
    limit_val: bool = False  # validate at most eval.max_iters batches (stock's interval validation)
    profile_step: int = 0  # the step whose CUDA profile is printed (0: none)
    first_batch_wait_s: float = 0.0  # how long the loop waited for its first batch
