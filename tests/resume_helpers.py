"""What the tests of a killed fine-tune job that resumes on the rerun share: the quick config cut to one resumable
experiment, waiting for its first whole step checkpoint, and killing or pausing the job's processes there
(tests/workflow/test_embedded_default.py, test_pbs_profiles.py and test_slurm_profile.py: each seeds its run from the
finished tree its module already made)."""

import os
import signal
import subprocess
import time
from pathlib import Path

import yaml

from slurm_cluster import descendants

TARGET = "results/finetune/baseline/summary.json"
ARGS = (TARGET, "--configfile", "config/config.yaml", "tests/quick.yaml")
FIRST_CHECKPOINT = "results/finetune/baseline/out/step-000001/prompt_style.yaml"  # written last: the step is whole


def resumable_quick(repo: Path) -> None:
    """Cut `repo`'s tests/quick.yaml to one experiment of 4 steps with a step checkpoint after each (no validation)."""
    quick = yaml.safe_load((repo / "tests/quick.yaml").read_text())
    quick["finetune"].update(max_steps=4, save_interval=1, global_batch_size=8, micro_batch_size=8)
    quick["finetune"]["extra"]["eval"]["interval"] = 100
    quick["experiments"] = [{"name": "baseline", "notes": "The settings above."}]
    (repo / "tests/quick.yaml").write_text(yaml.safe_dump(quick))


def wait_for_first_checkpoint(proc: subprocess.Popen, repo: Path, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not (repo / FIRST_CHECKPOINT).exists():
        assert proc.poll() is None, "snakemake ended before the first step checkpoint"
        assert time.monotonic() < deadline, f"no {FIRST_CHECKPOINT} within {timeout} s"
        time.sleep(0.01)


def kill_the_finetune_job(proc: subprocess.Popen, repo: Path) -> None:
    """SIGKILL every process of the running fine-tune job (its rule script and litgpt) once its first step
    checkpoint is whole."""
    wait_for_first_checkpoint(proc, repo, timeout=600)
    for pid in descendants(proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"finetune" in cmdline:
            os.kill(pid, signal.SIGKILL)


def pause_the_finetune_job(proc: subprocess.Popen, repo: Path) -> None:
    """SIGSTOP the fine-tune once its first step checkpoint is whole, so that the scheduler's limit kills it after
    that checkpoint whatever this machine's speed (the scheduler's SIGKILL still ends a stopped process)."""
    wait_for_first_checkpoint(proc, repo)
    for pid in job_processes(repo, b"finetune_full"):
        os.kill(pid, signal.SIGSTOP)


def job_processes(repo: Path, name: bytes) -> list[int]:
    """This test's processes (working directory in its repository copy) whose command line holds `name`: the
    jobs that the PBS emulator started, which are not children of the test's snakemake."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "cwd") == str(repo) and name in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found
