"""Compile, shard and materialise the model: FSDP2 `fully_shard` per block and at the root, DDP, or nothing."""

from __future__ import annotations

import torch

from llmhpc.train.fsdp2 import checkpoint, model

RESHARD_AFTER_FORWARD = {"full": True, "grad_op": False, "hybrid": False}


def fsdp(sharding: str, world) -> bool:
    """Whether FSDP2 shards the parameters (several processes, a sharding other than none, which is DDP)."""
    return world.size > 1 and sharding != "none"


def wrap(trainee: model.Trainee, sharding: str, world, compile_blocks: bool, static_shapes: bool = False):
    """Compile each block (LitGPT's Block code, unchanged), then shard. Returns the module to call.
    `static_shapes`: never shape-generic (dynamic=False: a graph per shape, the limit below allows 64)."""
    blocks = trainee.gpt.transformer.h
    if compile_blocks:
        import torch._dynamo

        for name in ("recompile_limit", "cache_size_limit"):  # one entry per block and shape
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 64))
        for block in blocks:
            block.compile(dynamic=False if static_shapes else None)
    if not fsdp(sharding, world):
        return trainee
    from torch.distributed.fsdp import fully_shard

    mesh = None
    if sharding == "hybrid":
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(world.device.type, (world.nodes, world.size // world.nodes),
                                mesh_dim_names=("replicate", "shard"))
    reshard = RESHARD_AFTER_FORWARD[sharding]
    for block in blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard)
    fully_shard(trainee, mesh=mesh, reshard_after_forward=reshard)
    return trainee


def materialise(trainee: model.Trainee, state: dict, run, world, sharding: str, max_seq_length: int,
                prepare=None):
    """Allocate the sharded parameters on the device, copy the checkpoint in, build the RoPE cache, then
    `prepare(trainee)` (the adapters' frozen base); DDP last (it broadcasts rank 0's parameters)."""
    trainee.to_empty(device=world.device)
    checkpoint.load_into(trainee.gpt, state)
    model.rope(trainee.gpt, max_seq_length, run.precision, world.device)
    if prepare is not None:
        prepare(trainee)
    if world.size > 1 and sharding == "none":
        from torch.nn.parallel import DistributedDataParallel

        ids = [world.device] if world.device.type == "cuda" else None
        return DistributedDataParallel(trainee, device_ids=ids)
    return trainee


def grad_scaler(precision: str, sharding: str, world):
    """Loss scaling for fp16 mixed precision (the V100 path); None otherwise."""
    if precision != "16-mixed":
        return None
    if fsdp(sharding, world):
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler()
    return torch.amp.GradScaler(world.device.type)
