"""How the fsdp2 engine lays the work out on its devices: planned from the switches and a memory estimate before
the data is split into steps (engine.plan_layout), then completed as the later choices are made."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    sharding: str  # full, grad_op, hybrid, or none (DDP, or one process)
    checkpointing: bool  # activation checkpointing of the blocks
    micro_rows: int  # rows per micro batch
    n_params: int
    cross_entropy: str  # fused, or chunked where the fused kernel cannot serve
    row_len: int  # tokens per row
    shards: int  # processes a parameter is sharded over
    row_bytes: float  # activation bytes per row (the memory prediction)
    static_shapes: bool  # a compiled graph per micro-batch shape (engine.static_shapes)
    # Decided later, each from what is only known then (set with dataclasses.replace by engine.main and build_model):
    compile: bool = False  # from the planned steps (engine.choose_compile)
    attention: str = "sdpa"  # from the compile choice (engine.attention_backend)
    float8_all_gather: bool = False  # from the sharding and nodes, as the model is built (converters.gathers_float8)
    converted: tuple[str, ...] = ()  # the model converters applied while building it, as the run prints them
