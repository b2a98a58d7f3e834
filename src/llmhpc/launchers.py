"""Which launcher started this process and what its environment says: torchrun, `srun`, `mpirun`, or none.

The ranks and the main address come from the launcher's environment as Lightning's cluster environments read
them (the ones `litgpt finetune_full` relies on through Fabric: TorchElastic, SLURM, MPI), written out here
without Lightning; a test compares each with Lightning's on the same environment. Under mpirun, mpi4py's
COMM_WORLD gives the ranks and rank 0 broadcasts its host and a free port. llmhpc.process_group reads it for the
fine-tune engine and the scorer alike.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

import torch.distributed as dist


@dataclass
class Launch:
    """What the launcher's environment says of this process, read as Lightning's ClusterEnvironment is (ranks by
    method, main address and port as attributes), so that the scorer (eval/parallel.py) reads it the same way."""

    rank: int
    size: int
    local: int
    main_address: str
    main_port: int

    def global_rank(self) -> int:
        return self.rank

    def world_size(self) -> int:
        return self.size

    def local_rank(self) -> int:
        return self.local


def torchrun() -> Launch | None:
    """TorchElasticEnvironment: torchrun's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT."""
    if not (dist.is_available() and dist.is_torchelastic_launched()):
        return None
    env = os.environ
    return Launch(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]),
                  env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 12910)))


def srun() -> Launch | None:
    """SLURMEnvironment, where srun started several tasks (a job named bash or interactive is not srun's): the
    ranks from SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID; the main node the first of SLURM_NODELIST, the port
    15000 + the job id's last four digits (MASTER_ADDR / MASTER_PORT win)."""
    env = os.environ
    if "SLURM_NTASKS" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    if int(env["SLURM_NTASKS"]) <= 1:
        return None
    if "SLURM_NTASKS_PER_NODE" not in env:  # Lightning's check of a common mistake, kept
        raise RuntimeError(f"You set `--ntasks={env['SLURM_NTASKS']}` in your SLURM bash script, but this variable is "
                           f"not supported. HINT: Use `--ntasks-per-node={env['SLURM_NTASKS']}` instead.")
    job = env.get("SLURM_JOB_ID")
    port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else (int(job[-4:]) + 15000 if job else 12910)
    return Launch(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env["SLURM_LOCALID"]),
                  env.get("MASTER_ADDR") or first_node(env.get("SLURM_NODELIST", "127.0.0.1")), port)


def first_node(nodes: str) -> str:
    """The first host of a Slurm node list: 'host0 host1', 'host0,host1', 'host[5-9]' -> host5."""
    nodes = re.sub(r"\[(.*?)[,-].*\]", "\\1", nodes)
    nodes = re.sub(r"\[(.*?)\]", "\\1", nodes)
    return nodes.split(" ")[0].split(",")[0]


# What an MPI launcher sets in each rank's environment: the size of its world (Open MPI's mpirun, MPICH's and Intel
# MPI's Hydra, MVAPICH2).
MPI_WORLD_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def mpirun() -> Launch | None:
    """MPIEnvironment: an MPI world of more than one rank (mpi4py); local rank within the ranks of this host
    (hosts in sorted order); rank 0's host name and a free port of its host, broadcast. Every rank takes part.
    MPI is not started where no MPI launcher says it started several ranks: importing mpi4py runs MPI_Init, which
    aborts the process in a Slurm job's single task where Open MPI has no PMI support (Lightning's check asks
    mpi4py first)."""
    if not any(os.environ.get(name, "1").isdigit() and int(os.environ[name]) > 1
               for name in MPI_WORLD_SIZE if name in os.environ):
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    comm = MPI.COMM_WORLD
    if comm.Get_size() <= 1:
        return None
    host = socket.gethostname()
    hosts = comm.bcast(sorted(set(comm.gather(host, root=0) or [])), root=0)
    local = comm.Split(color=hosts.index(host))
    address = comm.bcast(host, root=0)
    port = comm.bcast(free_port(), root=0)
    return Launch(comm.Get_rank(), comm.Get_size(), local.Get_rank(), address, port)


def free_port() -> int:
    if "STANDALONE_PORT" in os.environ:
        return int(os.environ["STANDALONE_PORT"])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def cluster_environment() -> tuple[str, Launch] | None:
    """The first launcher that started this process, or None (Lightning's order: torchrun, srun, mpirun)."""
    for name, detect in (("torchrun", torchrun), ("srun", srun), ("mpirun", mpirun)):
        found = detect()
        if found is not None:
            return name, found
    return None
