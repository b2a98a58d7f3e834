"""The fine-tune engine's process group, for whichever launcher started us (llmhpc.launchers): torchrun, `srun`,
`mpirun`, or a plain process. (A plain process asked for several devices re-executes itself under torchrun
first: see __main__.py.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llmhpc.launchers import cluster_environment


@dataclass
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    nodes: int = 1
    device: torch.device = torch.device("cpu")
    launcher: str = "single"

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(devices: int, num_nodes: int) -> World:
    """Join (or create) the process group; check the world against devices x num_nodes."""
    found = cluster_environment()
    if found is None and int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        # mpirun started several ranks but mpi4py sees a world of one: it was built against another MPI
        raise RuntimeError(f"mpirun started {os.environ['OMPI_COMM_WORLD_SIZE']} ranks but mpi4py does not see them "
                           "(MPI world size 1): install mpi4py built against the MPI that provides this mpirun")
    if found is None:
        if devices * num_nodes > 1 and os.environ.get("LLMHPC_FAST_NO_RESPAWN") != "1":
            raise RuntimeError(f"devices x num_nodes = {devices} x {num_nodes} but no launcher started this "
                               "process: run `python -m llmhpc.train.fast` (it starts torchrun on one node) or "
                               "start one process per GPU with torchrun, srun or mpirun")
        if num_nodes > 1:
            raise RuntimeError(f"num_nodes {num_nodes}: start one process per GPU with torchrun, srun or mpirun")
        return World(device=_device(0))
    launcher, env = found
    rank, size, local_rank = env.global_rank(), env.world_size(), env.local_rank()
    if size != devices * num_nodes:
        raise RuntimeError(f"{launcher} started {size} processes but devices x num_nodes = {devices} x {num_nodes}")
    os.environ.setdefault("MASTER_ADDR", env.main_address)
    os.environ.setdefault("MASTER_PORT", str(env.main_port))
    device = _device(local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, rank=rank, world_size=size, **kwargs)
    return World(rank=rank, local_rank=local_rank, size=size, nodes=num_nodes, device=device, launcher=launcher)


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def all_sum(value: torch.Tensor, world: World) -> torch.Tensor:
    if world.size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def close(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def all_max(value: torch.Tensor, world: World) -> torch.Tensor:
    if world.size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value
