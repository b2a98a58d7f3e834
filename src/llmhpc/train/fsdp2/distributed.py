"""The fine-tune engine's world: the process group of llmhpc.process_group (torchrun, `srun`, `mpirun`, or a plain
process) with the engine's own checks and its nodes and device. (A plain process asked for several devices
re-executes itself under torchrun first: see __main__.py.) The collectives are process_group's.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from llmhpc import process_group


@dataclass(frozen=True)
class World(process_group.Ranks):
    nodes: int = 1
    device: torch.device = torch.device("cpu")


def init(devices: int, num_nodes: int) -> World:
    """Join (or create) the process group; check the world against devices x num_nodes."""
    ranks = process_group.find()
    if ranks.launcher == "single":
        if devices * num_nodes > 1 and os.environ.get("LLMHPC_FSDP2_NO_RESPAWN") != "1":
            raise RuntimeError(f"devices x num_nodes = {devices} x {num_nodes} but no launcher started this "
                               "process: run `python -m llmhpc.train.fsdp2` (it starts torchrun on one node) or "
                               "start one process per GPU with torchrun, srun or mpirun")
        if num_nodes > 1:
            raise RuntimeError(f"num_nodes {num_nodes}: start one process per GPU with torchrun, srun or mpirun")
        return World(device=process_group.device(0))
    if ranks.size != devices * num_nodes:
        raise RuntimeError(f"{ranks.launcher} started {ranks.size} processes but devices x num_nodes = "
                           f"{devices} x {num_nodes}")
    device = process_group.device(ranks.local_rank)
    process_group.start(ranks, device)
    return World(**dataclasses.asdict(ranks), nodes=num_nodes, device=device)
