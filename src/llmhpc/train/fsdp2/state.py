"""What the fsdp2 engine's training holds while it runs: one typed object that the loop, validation, the step
checkpoints and the final save read, built in stages by engine.main (data first, then model and optimizer). The step
checkpoints' own state (what was restored, the save plan, the signals) is step_checkpoint.StepCheckpoints."""

from __future__ import annotations

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
    limit_val: bool = False  # validate at most eval.max_iters batches (stock's interval validation)
    profile_step: int = 0  # the step whose CUDA profile is printed (0: none)
    first_batch_wait_s: float = 0.0  # how long the loop waited for its first batch


@dataclass
class PhaseClock:
    """perf_counter marks of the job's phases as the engine sees them, from the launch (the stage's first, where a
    launcher re-executed the engine) and the last import; engine.main marks the rest as it reaches them."""

    launch: float
    imported: float
    imported_at: float  # the wall-clock time of the last import
    warm_start: float = 0.0
    warm_end: float = 0.0
    train_start: float = 0.0
    train_end: float = 0.0
    saved: float = 0.0

    def phase_times(self) -> dict:
        """startup (launch to the last import), load (process group, data, model and weights on the device; a
        resumed run's state), warmup (compile and warm-up passes), work (the training loop), save (report, final
        validation, checkpoint, side files); and the wall-clock time of the last import, from which the stage
        measures the start-up from its own start (the launcher's included)."""
        spans = {"startup_s": self.imported - self.launch,
                 "load_s": self.warm_start - self.imported + self.train_start - self.warm_end,
                 "warmup_s": self.warm_end - self.warm_start,
                 "work_s": self.train_end - self.train_start,
                 "save_s": self.saved - self.train_end}
        return {**{k: round(v, 3) for k, v in spans.items()}, "imported_at": round(self.imported_at, 3)}
