"""The evaluate stage's scorer command: one node through torchrun, several through the site's launcher."""

import subprocess

import pytest

from llmhpc.cluster import launch
from llmhpc.stages import evaluate

SETTINGS = {"scorer": "fast", "device": "cuda", "gpus": 4, "precision": "bf16-true"}


def scorer_command(monkeypatch, settings: dict, plan=None) -> list[str]:
    seen = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: seen.append(cmd) or subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(RuntimeError, match="the fast scorer exited with 1"):
        evaluate.run(settings, "ckpt", "items.jsonl", "p.jsonl", "m.json", log=lambda *a: None, launch=plan)
    return seen[0]


def test_one_node_runs_torchrun_standalone(monkeypatch):
    cmd = scorer_command(monkeypatch, dict(SETTINGS, num_nodes=1))
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m"]


def test_several_nodes_start_through_the_sites_launcher(monkeypatch, tmp_path):
    site = {"name": "pbs", "scheduler": "pbs", "launcher": "mpirun", "gpus_per_node": 4, "env": {"NCCL_DEBUG": "WARN"}}
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n1\nn1\nn2\nn2\n")
    plan = launch.plan(site, {"num_nodes": 2, "devices": 4}, {"PBS_NODEFILE": str(nodefile)}, tmpdir=str(tmp_path),
                       what="evaluate")
    cmd = scorer_command(monkeypatch, dict(SETTINGS, num_nodes=2), plan)
    assert cmd[:3] == ["mpirun", "-np", "8"] and "-x" in cmd and "NCCL_DEBUG" in cmd
    assert cmd[cmd.index("-m") + 1] == "llmhpc.eval.run"
    with pytest.raises(launch.LaunchError, match="the job has 2 node"):
        launch.plan(site, {"num_nodes": 3, "devices": 4}, {"PBS_NODEFILE": str(nodefile)}, tmpdir=str(tmp_path),
                    what="evaluate")
