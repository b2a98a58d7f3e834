"""A workflow run whose fine-tune job is killed mid-run (the job's processes SIGKILLed once a step checkpoint is
whole; through the PBS emulator, killed by its walltime) fails; the same `snakemake` command again resumes the
fine-tune from that step checkpoint, which survived Snakemake's removal of the failed job's outputs, and removes it
once finished."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import copy_repo, seeded_copy, snakemake
from slurm_cluster import descendants

pytestmark = [pytest.mark.snakemake, pytest.mark.e2e]

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


@pytest.fixture(scope="module")
def before_the_finetune(tmp_path_factory) -> Path:
    """A tree with what the fine-tune takes (environment manifest, base checkpoint, data; no scheduler: these
    jobs' settings hold no site), made once: each test copies it and runs the fine-tune it kills."""
    repo = copy_repo(tmp_path_factory.mktemp("resume") / "repo")
    resumable_quick(repo)
    snakemake(repo, *ARGS[1:], "--", "results/checkpoints/base", "results/data/finetune/train.json",
              "results/data/finetune/val.json")
    return repo


def test_rerun_after_a_killed_finetune_resumes_from_its_step_checkpoint(before_the_finetune, tmp_path):
    repo = seeded_copy(before_the_finetune, tmp_path / "repo")
    out = repo / "results/finetune/baseline/out"
    log = open(tmp_path / "first.out", "w+")
    first = subprocess.Popen([sys.executable, "-m", "snakemake", *ARGS], cwd=repo, stdout=log,
                             stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(repo / "src")))
    try:
        kill_the_finetune_job(first, repo)
        assert first.wait(120) != 0
    finally:
        if first.poll() is None:
            first.kill()
    log.seek(0)
    output = log.read()
    assert "Error in rule finetune" in output, output[-3000:]
    assert (out / "step-000001/lit_model.pth").is_file() and not (out / "final").exists()

    rerun = snakemake(repo, *ARGS)  # the same command: no --rerun-incomplete needed after a failed job
    rule_log = (repo / "results/logs/finetune/baseline.log").read_text()
    summary = json.loads((repo / TARGET).read_text())
    step = summary["resumed_from_step"]
    assert step is not None and 1 <= step < 4 and f"resume: from step {step}" in rule_log, rerun.stdout[-2000:]
    stdout = (repo / "results/finetune/baseline/finetune.stdout").read_text()
    assert f"Resuming training from {Path('results/finetune/baseline/out') / f'step-{step:06d}'}" in stdout
    assert summary["exit_code"] == 0 and (out / "final/lit_model.pth").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["final", "logs"]  # the step checkpoints went once done


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


def test_walltime_killed_pbs_finetune_resumes_on_rerun(before_the_finetune, tmp_path, pbs_env, monkeypatch):
    """Through the Gadi profile and the PBS emulator: once its first step checkpoint is whole the fine-tune is
    paused (SIGSTOP) and its walltime cut to one minute (qalter, as a PBS manager may), so that PBS kills it (SIGTERM,
    SIGKILL, Exit_status 271) whatever this machine's speed; the same command again resumes from that checkpoint."""
    from test_pbs_profiles import with_site

    monkeypatch.setenv("PBS_EMULATOR_TIME_SCALE", "0.2")  # an emulated minute of walltime lasts 12 s
    repo = with_site(seeded_copy(before_the_finetune, tmp_path / "repo"), project="ab12")
    args = ["--profile", "profiles/gadi", "--configfile", "config/config.yaml", "tests/quick.yaml", "test-site.yaml",
            "--seconds-between-status-checks", "2"]
    out = repo / "results/finetune/baseline/out"
    log = open(tmp_path / "first.out", "w+")
    first = subprocess.Popen([sys.executable, "-m", "snakemake", *args, "--", TARGET], cwd=repo, stdout=log,
                             stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(repo / "src")))
    try:
        pause_the_finetune_job(first, repo)
        (job,) = [json.loads(p.read_text()) for p in (pbs_env / "jobs").glob("*.json")
                  if json.loads(p.read_text())["Job_Name"] == "finetune.baseline"]
        subprocess.run(["qalter", "-l", "walltime=00:01:00", f"{job['_seq']}.emu-pbs"], check=True,
                       capture_output=True, timeout=30)
        assert first.wait(300) != 0
    finally:
        if first.poll() is None:
            first.kill()
    log.seek(0)
    output = log.read()
    assert re.search(r"\(finetune\.baseline\) killed for exceeding its walltime 00:01:00 \(Exit_status 271\)", output), \
        output[-3000:]
    assert (out / "step-000001/lit_model.pth").is_file() and not (out / "final").exists()

    snakemake(repo, *args, "--", TARGET)
    summary = json.loads((repo / TARGET).read_text())
    assert summary["resumed_from_step"] == 1 and summary["exit_code"] == 0
    assert "Resuming training from results/finetune/baseline/out/step-000001" in \
        (repo / "results/finetune/baseline/finetune.stdout").read_text()
