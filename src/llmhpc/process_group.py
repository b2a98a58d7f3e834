"""The process group that the fine-tune engine (llmhpc.train.fsdp2.distributed) and the scorer (llmhpc.eval.parallel)
both run in: who started this process and its ranks (llmhpc.launchers: torchrun, `srun`, `mpirun`, or none), the
device of its local rank, the group itself (NCCL on GPUs, gloo on CPUs) and the few collectives both use.

Each caller keeps its own refusals (the engine's world against devices x num_nodes, the scorer's pipelines);
what is wrong with the launch itself is refused here, once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llmhpc.launchers import cluster_environment


@dataclass(frozen=True)
class Ranks:
    """This process among those its launcher started; launcher "single" where none started it (rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    launcher: str = "single"
    main_address: str = "127.0.0.1"
    main_port: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def find() -> Ranks:
    """The launcher's ranks and main address. Under mpirun every rank broadcasts through mpi4py here: call it on
    every rank, before any other collective."""
    found = cluster_environment()
    if found is None:
        started = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
        if started > 1:
            # mpirun started several ranks but mpi4py sees a world of one: it was built against another MPI
            raise RuntimeError(f"mpirun started {started} ranks but mpi4py does not see them (MPI world size 1): "
                               "install mpi4py built against the MPI that provides this mpirun")
        return Ranks()
    launcher, env = found
    return Ranks(rank=env.global_rank(), local_rank=env.local_rank(), size=env.world_size(), launcher=launcher,
                 main_address=env.main_address, main_port=env.main_port)


def device(local_rank: int, kind: str | None = None) -> torch.device:
    """The local rank's GPU (made the current one, as NCCL expects) where `kind` is "cuda", or where it is None
    and a GPU is there; the CPU otherwise."""
    if kind is None:
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def start(ranks: Ranks, on: torch.device) -> None:
    """Join the group of several processes (one process needs none): NCCL bound to the GPU `on`, gloo on the CPU.
    The launcher's main address wins over the environment's, since every rank must dial the same one (mpirun's is
    rank 0's, broadcast; torchrun's and srun's already are MASTER_ADDR / MASTER_PORT where set)."""
    if ranks.size <= 1 or dist.is_initialized():
        return
    os.environ.update(MASTER_ADDR=ranks.main_address, MASTER_PORT=str(ranks.main_port))
    if on.type == "cuda":
        dist.init_process_group("nccl", rank=ranks.rank, world_size=ranks.size, device_id=on)
    else:
        dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.size)


def close(size: int) -> None:
    if size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def barrier(size: int) -> None:
    if size > 1:
        dist.barrier()


def all_sum(value: torch.Tensor, size: int) -> torch.Tensor:
    """`value` summed over the group, in place (unchanged for one process)."""
    if size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_max(value: torch.Tensor, size: int) -> torch.Tensor:
    if size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value
