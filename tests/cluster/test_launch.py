"""Multi-node launch: mpirun, srun and pernode (torchrun per node, for real on CPU)."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from llmhpc.cluster import launch
from pbs_helpers import GADI


def test_mpirun_one_rank_per_gpu_over_the_node_file(tmp_path, monkeypatch):
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: object())  # as if mpi4py were there
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("gadi-gpu-1\n" * 48 + "gadi-gpu-2\n" * 48)  # Gadi lists a host once per CPU
    ft = {"num_nodes": 2, "devices": 4, "launch_env": {"NCCL_SHM_DISABLE": "1"}}
    site = {**GADI, "env": {"NCCL_DEBUG": "WARN", "NCCL_SHM_DISABLE": "0"}}
    plan = launch.plan(site, ft, {"PBS_NODEFILE": str(nodefile), "PBS_JOBID": "1.gadi"}, tmpdir=str(tmp_path))
    hostfile = plan["prefix"][plan["prefix"].index("--hostfile") + 1]
    assert Path(hostfile).read_text() == "gadi-gpu-1 slots=4\ngadi-gpu-2 slots=4\n"
    assert plan["prefix"] == ["mpirun", "-np", "8", "--hostfile", hostfile, "--map-by", "ppr:4:node",
                              "-x", "NCCL_DEBUG", "-x", "NCCL_SHM_DISABLE", "-x", "OMP_NUM_THREADS",
                              "-x", "TORCHINDUCTOR_CACHE_DIR", "--bind-to", "none"]
    assert plan["env"] == {"NCCL_DEBUG": "WARN", "NCCL_SHM_DISABLE": "1", "OMP_NUM_THREADS": "12",
                           "TORCHINDUCTOR_CACHE_DIR": str(Path.cwd() / ".cache/torch-compile")}
    assert plan["hosts"] == ["gadi-gpu-1", "gadi-gpu-2"] and plan["job_id"] == "1.gadi"


def test_compile_cache_is_absolute_and_yields_to_one_already_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ft = {"num_nodes": 1, "devices": 4}
    assert launch.plan(GADI, ft, {})["env"]["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / ".cache/torch-compile")
    assert launch.plan({**GADI, "compile_cache": "~/tc"}, ft, {})["env"]["TORCHINDUCTOR_CACHE_DIR"] == \
        str(Path.home() / "tc")
    assert launch.plan({**GADI, "compile_cache": "/scratch/ab12/$USER/tc"}, ft, {"USER": "ab1234"})["env"][
        "TORCHINDUCTOR_CACHE_DIR"] == "/scratch/ab12/ab1234/tc"
    named = {**GADI, "env": {"TORCHINDUCTOR_CACHE_DIR": "/scratch/ab12/tc"}}
    assert launch.plan(named, ft, {})["env"]["TORCHINDUCTOR_CACHE_DIR"] == "/scratch/ab12/tc"
    # the submitting shell's own choice reaches the job unchanged; "" leaves torch's default
    assert "TORCHINDUCTOR_CACHE_DIR" not in launch.plan(GADI, ft, {"TORCHINDUCTOR_CACHE_DIR": "/x"})["env"]
    assert "TORCHINDUCTOR_CACHE_DIR" not in launch.plan({**GADI, "compile_cache": ""}, ft, {})["env"]
    assert launch.compile_cache_env(GADI, {}, {}) == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / ".cache/torch-compile")}


def test_mpirun_on_one_host_puts_every_node_rank_here(tmp_path, monkeypatch):
    # site.nodes_on_one_host (the multi-node path on one machine): no node file; all ranks on this host, the engine
    # groups them into num_nodes nodes by rank
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: object())
    site = {**GADI, "nodes_on_one_host": True}
    plan = launch.plan(site, {"num_nodes": 2, "devices": 2}, {}, tmpdir=str(tmp_path))
    hostfile = plan["prefix"][plan["prefix"].index("--hostfile") + 1]
    assert Path(hostfile).read_text() == "localhost slots=4\n"
    assert plan["prefix"][:7] == ["mpirun", "-np", "4", "--hostfile", hostfile, "--map-by", "ppr:4:node"]
    assert plan["launcher"] == "mpirun" and plan["hosts"] == ["localhost"]


def test_launch_refuses_a_job_whose_nodes_differ_from_num_nodes(tmp_path, monkeypatch):
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: object())
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("n1\n")
    with pytest.raises(launch.LaunchError, match=r"the job has 1 node\(s\) .* but finetune.num_nodes is 2"):
        launch.plan(GADI, {"num_nodes": 2, "devices": 4}, {"PBS_NODEFILE": str(nodefile)}, tmpdir=str(tmp_path))


def test_mpirun_needs_mpi4py(monkeypatch):
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(launch.LaunchError, match="needs mpi4py"):
        launch.plan(GADI, {"num_nodes": 2, "devices": 4}, {"PBS_NODEFILE": "/nonexistent"})


@pytest.mark.unit
def test_srun_starts_a_rank_per_gpu_and_a_failed_rank_ends_the_others():
    plan = launch.plan({**GADI, "launcher": "srun"}, {"num_nodes": 2, "devices": 4}, {"SLURM_JOB_NUM_NODES": "2"})
    assert plan["prefix"] == ["srun", "--overlap", "--kill-on-bad-exit=1", "--nodes=2", "--ntasks-per-node=4",
                              "--ntasks=8", "--export=ALL"]
    with pytest.raises(launch.LaunchError, match="the Slurm job has 1 node"):
        launch.plan({**GADI, "launcher": "srun"}, {"num_nodes": 2, "devices": 4}, {"SLURM_JOB_NUM_NODES": "1"})


def test_one_node_jobs_let_litgpt_start_its_processes():
    plan = launch.plan(GADI, {"num_nodes": 1, "devices": 4}, {})
    assert plan["prefix"] == [] and plan["launcher"] == "local" and plan["site_launcher"] == "mpirun"


def test_pernode_starts_torchrun_per_node_remote_ones_through_the_remote_shell():
    commands = launch.node_commands(["python", "-m", "litgpt", "finetune_full"], ["n1", "n2"], 4, 29500,
                                    ["ssh", "-o", "BatchMode=yes"], ["NCCL_DEBUG"], False,
                                    environ={"NCCL_DEBUG": "INFO", "PATH": "/x/bin"})
    local, remote = commands
    assert local[0][3:10] == ["--nnodes=2", "--node-rank=0", "--nproc-per-node=4", "--master-addr=n1",
                              "--master-port=29500", "--no-python", "python"]
    assert remote[0][:4] == ["ssh", "-o", "BatchMode=yes", "n2"]
    assert "env NCCL_DEBUG=INFO PATH=/x/bin " in remote[0][4] and "--node-rank=1" in remote[0][4]
    colocated = launch.node_commands(["true"], ["127.0.0.1"] * 2, 2, 1, ["ssh"], [], True, environ={})
    assert [extra for _, extra in colocated] == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]


@pytest.mark.distributed
def test_pernode_two_nodes_on_one_host_rendezvous_for_real(tmp_path):
    """The pernode launcher with real torchrun: 2 node ranks x 2 processes join one gloo process group."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "t = torch.tensor([dist.get_rank()]); dist.all_reduce(t)\n"
        # one write(2) per line: a node's two processes share torchrun's stdout, and print() may write the text
        # and its newline separately (PYTHONUNBUFFERED), which lets their lines interleave
        "os.write(1, f\"rank {dist.get_rank()}/{dist.get_world_size()} local {os.environ['LOCAL_RANK']}"
        " node {os.environ['GROUP_RANK']} sum {int(t)}\\n\".encode())\n"
        "dist.destroy_process_group()\n")
    site = {"name": "one-host", "launcher": "pernode", "nodes_on_one_host": True, "env": {}}
    plan = launch.plan(site, {"num_nodes": 2, "devices": 2}, {})
    proc = subprocess.run([*plan["prefix"], sys.executable, str(probe)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = sorted(re.findall(r"\[node (\d)\] rank (\d)/4 local (\d) node (\d) sum 6", proc.stdout))
    assert ranks == [("0", "0", "0", "0"), ("0", "1", "1", "0"), ("1", "2", "0", "1"), ("1", "3", "1", "1")]


@pytest.mark.distributed
def test_pernode_stops_the_other_nodes_when_one_fails(tmp_path):
    commands = [([sys.executable, "-c", "import time; time.sleep(60)"], {}),
                ([sys.executable, "-c", "import sys; print('boom'); sys.exit(7)"], {})]
    start = time.time()
    assert launch.run_nodes(commands, out=open(tmp_path / "out", "w")) == 7
    assert time.time() - start < 20
    assert (tmp_path / "out").read_text() == "[node 1] boom\n"
