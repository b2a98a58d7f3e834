"""llmhpc.process_group in one process: who started it and its ranks, the mpirun refusal, the device, and the group
and collectives that one process does without (the engine's and the scorer's tests run the real groups)."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import pytest
import torch

from llmhpc import process_group

pytestmark = pytest.mark.unit

LAUNCHED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "GROUP_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture
def plain(monkeypatch):
    """No launcher's variables, and an mpi4py whose world is one rank (as outside mpirun)."""
    for key in [k for k in os.environ if k.startswith(("SLURM_", "OMPI_", "PMI_")) or k in LAUNCHED]:
        monkeypatch.delenv(key)
    # MPI's own initialisation is not under test (under a fake OMPI_COMM_WORLD_SIZE it would look for mpirun): the
    # fake mpi4py answers as one built against another MPI does, a world of one
    world = SimpleNamespace(Get_size=lambda: 1)
    monkeypatch.setitem(sys.modules, "mpi4py", SimpleNamespace(MPI=SimpleNamespace(COMM_WORLD=world)))
    return monkeypatch


def test_a_plain_process_is_rank_0_of_1_on_the_cpu(plain):
    ranks = process_group.find()
    assert ranks == process_group.Ranks()
    assert (ranks.rank, ranks.local_rank, ranks.size, ranks.launcher, ranks.main) == (0, 0, 1, "single", True)
    assert process_group.device(0, "cpu") == torch.device("cpu")
    process_group.start(ranks, torch.device("cpu"))  # one process needs no group
    assert not torch.distributed.is_initialized()
    value = torch.tensor([2.0])
    assert process_group.all_sum(value, 1) is value and process_group.all_max(value, 1).item() == 2.0
    process_group.barrier(1)
    process_group.close(1)


def test_torchrun_s_ranks_and_main_address_are_read(plain):
    for key, value in {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1",
                       "MASTER_ADDR": "node7", "MASTER_PORT": "29511"}.items():
        plain.setenv(key, value)
    ranks = process_group.find()
    assert (ranks.launcher, ranks.rank, ranks.local_rank, ranks.size) == ("torchrun", 3, 1, 4)
    assert (ranks.main_address, ranks.main_port, ranks.main) == ("node7", 29511, False)


def test_srun_s_ranks_are_read(plain):
    for key, value in {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_PROCID": "6", "SLURM_LOCALID": "2",
                       "SLURM_NODELIST": "gpu[12-13]", "SLURM_JOB_ID": "4471234", "SLURM_JOB_NAME": "ft"}.items():
        plain.setenv(key, value)
    plain.delenv("MASTER_ADDR", raising=False)
    plain.delenv("MASTER_PORT", raising=False)
    ranks = process_group.find()
    assert (ranks.launcher, ranks.rank, ranks.local_rank, ranks.size) == ("srun", 6, 2, 8)
    assert (ranks.main_address, ranks.main_port) == ("gpu12", 15000 + 1234)


def test_a_slurm_jobs_single_task_starts_no_mpi(plain):
    """In a batch job's one task (srun, no MPI launcher) MPI is not started: mpi4py's import runs MPI_Init, which
    aborts the process where Open MPI has no PMI support for Slurm (found in the Slurm test's scoring job)."""
    class Aborts:
        def __getattr__(self, name):
            raise AssertionError(f"mpi4py.{name} used: MPI_Init would run in a Slurm job's single task")

    plain.setitem(sys.modules, "mpi4py", Aborts())
    plain.setenv("SLURM_JOB_ID", "1234")
    plain.setenv("SLURM_NTASKS", "1")
    plain.setenv("SLURM_PROCID", "0")
    plain.setenv("SLURM_LOCALID", "0")
    assert process_group.find() == process_group.Ranks()
    plain.setenv("OMPI_COMM_WORLD_SIZE", "1")  # mpirun -n 1: a world of one, no MPI needed either
    assert process_group.find() == process_group.Ranks()


def test_mpirun_ranks_that_mpi4py_cannot_see_are_refused(plain):
    plain.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="mpirun started 2 ranks but mpi4py does not see them .*install mpi4py "
                                           "built against the MPI that provides this mpirun"):
        process_group.find()


def test_the_engine_and_the_scorer_refuse_a_wrong_mpirun_alike(plain):
    from llmhpc.eval import parallel
    from llmhpc.train.fsdp2 import distributed

    plain.setenv("OMPI_COMM_WORLD_SIZE", "2")
    for start in (lambda: distributed.init(1, 2), lambda: parallel.init_distributed(1, "cpu")):
        with pytest.raises(RuntimeError, match="mpi4py does not see them"):
            start()


def test_each_caller_keeps_its_own_refusals(plain):
    from llmhpc.eval import parallel
    from llmhpc.train.fsdp2 import distributed

    plain.delenv("LLMHPC_FSDP2_NO_RESPAWN", raising=False)
    with pytest.raises(RuntimeError, match="no launcher started this process"):
        distributed.init(2, 1)
    for key, value in {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"}.items():
        plain.setenv(key, value)
    with pytest.raises(RuntimeError, match="torchrun started 3 processes but devices x num_nodes = 2 x 1"):
        distributed.init(2, 1)
    with pytest.raises(ValueError, match="3 processes cannot form pipelines of 2 stages"):
        parallel.init_distributed(2, "cpu")
