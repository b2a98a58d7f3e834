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


def test_the_jobs_phases_split_its_stage_wall():
    """The fast scorer's own figures (process age at its load, load, scoring, writing, the compile warm-up it
    waited for) become the job's phases; in the stage's process its start-up counts from the stage's start, in
    processes of its own from theirs; exit is the rest of the stage wall. A scorer that records no start-up (the
    reference) has it as what ran before its load."""
    fast = {"load_s": 9.0, "score_s": 20.0, "wall_s": 34.0,
            "phases_s": {"python_start_s": 1.5, "imports_s": 2.0, "setup_s": 0.5, "load_s": 3.0, "score_s": 6.0,
                         "write_s": 0.25, "compile_wait_s": 0.75}}
    spread = evaluate.phases(fast, wall=14.0, age_at_start=1.0, in_process=False)
    assert spread == {"phase_startup_s": 4.0, "phase_load_s": 3.0, "phase_warmup_s": 0.75, "phase_work_s": 6.0,
                      "phase_save_s": 0.25, "phase_exit_s": 0.0}
    here = evaluate.phases(fast, wall=13.0, age_at_start=1.0, in_process=True)
    assert here["phase_startup_s"] == 3.0 and here["phase_exit_s"] == 0.0
    assert sum(here.values()) == 13.0
    later = evaluate.phases(fast, wall=20.0, age_at_start=1.0, in_process=True)
    assert later["phase_exit_s"] == 7.0
    reference = {"load_s": 2.0, "score_s": 5.0, "wall_s": 7.5}  # its wall: from before the load to results written
    assert evaluate.phases(reference, wall=9.0, age_at_start=1.0, in_process=True) == {
        "phase_startup_s": 1.5, "phase_load_s": 2.0, "phase_warmup_s": 0.0, "phase_work_s": 5.0, "phase_save_s": 0.5,
        "phase_exit_s": 0.0}
