"""The shipped PBS profiles (Gadi, Aspire 2A) end to end: real Snakemake with the cluster-generic executor
against the PBS emulator."""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import copy_repo, pbs_server, seeded_copy, snakemake
from pbs_helpers import calls, wait_for

pytestmark = [pytest.mark.snakemake]
# The runs stop at the summary table: every PBS job (convert, fine-tunes, evaluations) is before it, and the plots,
# slides and submission after it are local rules, run by tests/workflow/test_embedded_default.py.
SUMMARY = "results/summary.csv"
# What a copy of a finished run's tree must lose to run on a fresh emulated server: the status cache of the first
# server's jobs (the new server numbers its jobs from the same first id).
PBS_STATE = ".snakemake/llmhpc-pbs"

# ---------------------------------------------------------------------------- the workflow through the profiles

def cluster_repo(tmp_path: Path, **site) -> Path:
    """A copy of the repository and a config file of test-site keys (no environment modules on this machine;
    status checks every 2 s instead of 30)."""
    return with_site(copy_repo(tmp_path / "repo"), **site)


def with_site(repo: Path, **site) -> Path:
    (repo / "test-site.yaml").write_text(yaml.safe_dump({"site": {"modules": [], "jobfs_gb": None, **site}}))
    return repo


def run_profile(repo: Path, profile: str, *args, check=True, timeout=900):
    return snakemake(repo, "--profile", f"profiles/{profile}", "--configfile", "config/config.yaml", "tests/quick.yaml",
                     "test-site.yaml",
                     "--seconds-between-status-checks", "2", *args, check=check, timeout=timeout)


def qsub_lines(output: str) -> list[str]:
    start = output.index("PBS submissions of this dry run")
    return [ln.strip() for ln in output[start:].splitlines()[1:] if ln.strip().startswith("cd ")]



def test_shipped_gadi_profile_refuses_before_queueing_until_a_project_is_set(tmp_path, pbs_env):
    repo = copy_repo(tmp_path / "repo")
    proc = snakemake(repo, "--profile", "profiles/gadi", "-n", check=False, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "preflight for site 'gadi' refused:" in output
    assert "site 'gadi' (PBS) has no project code: set site.project in the profile's site.yaml" in output
    assert not calls(pbs_env, "qsub")


@pytest.fixture(scope="module")
def gadi_run(tmp_path_factory):
    """The quick config through the Gadi profile on an emulated PBS server of its own: first `-n`, then the run.
    Returns the repository, the dry run's qsub lines, the qsub calls the dry run made, and the server's home."""
    tmp = tmp_path_factory.mktemp("gadi")
    with pytest.MonkeyPatch.context() as mp:
        home = pbs_server(mp, tmp / "pbs-server")
        repo = cluster_repo(tmp, project="ab12", env={"NCCL_SHM_DISABLE": "1"})
        dry = run_profile(repo, "gadi", "-n", "--", SUMMARY)
        lines, dry_qsubs = qsub_lines(dry.stdout + dry.stderr), calls(home, "qsub")
        run_profile(repo, "gadi", "--", SUMMARY)
    return repo, lines, dry_qsubs, home


@pytest.mark.e2e
def test_embedded_default_through_the_gadi_profile(gadi_run):
    repo, lines, dry_qsubs, pbs_home = gadi_run
    logs, jobs = repo / "results/logs/scheduler", repo / "results/jobs"
    assert f"cd {logs} && qsub -N finetune.baseline -P ab12 -q gpuvolta" \
           f" -l ngpus=1,ncpus=12,mem=95500MB,walltime=02:00:00 -j n {jobs}/finetune/finetune.baseline.pbs" in lines
    assert f"cd {logs} && qsub -N convert -P ab12 -q normal -l ncpus=1,mem=8GB,walltime=01:00:00 -j n" \
           f" {jobs}/convert/convert.pbs" in lines
    assert len(lines) == 6 and not dry_qsubs  # convert, 2 finetunes, 3 evaluations; nothing submitted

    submitted = calls(pbs_home, "qsub")
    assert sorted(submitted) == sorted(shlex.split(ln.split(" && qsub ", 1)[1]) for ln in lines)
    assert len(calls(pbs_home, "qstat")) < 3 * len(submitted) + 30  # one qstat per cache window, not per call
    assert (repo / "results/summary.csv").exists()
    for name in ("finetune/finetune.baseline.pbs", "finetune/finetune.mbs16.pbs", "evaluate/evaluate.base.pbs",
                 "convert/convert.pbs"):
        assert (jobs / name).read_text().startswith("#!/bin/bash\n#PBS -N ")
    assert len(list(logs.glob("finetune.baseline.o*"))) == 1 and len(list(logs.glob("evaluate.mbs16.e*"))) == 1
    record = json.loads((repo / "results/finetune/baseline/summary.json").read_text())["launch"]
    assert record["site"] == "gadi" and record["env"] == {
        "NCCL_SHM_DISABLE": "1", "OMP_NUM_THREADS": "12",  # the job's compile cache outlives the job's /tmp
        "TORCHINDUCTOR_CACHE_DIR": str((repo / ".cache/torch-compile").resolve())}
    assert re.fullmatch(r"\d+\.emu-pbs", record["job_id"])
    # Gadi's rates: every evaluation job records its measured cost too, and the summary table has it
    evaluated = json.loads((repo / "results/evaluate/mbs16/metrics.json").read_text())
    assert evaluated["su"] is not None and evaluated["su_estimate"] > 0
    assert "mbs16,evaluate,su," in (repo / "results/summary.csv").read_text()
    # a stock fine-tune in a PBS job says which step-checkpoint interval it ran with, and why
    assert "save_interval_why" in json.loads((repo / "results/finetune/baseline/summary.json").read_text())


@pytest.mark.e2e
def test_embedded_default_through_the_aspire2a_profile(gadi_run, tmp_path, pbs_env):
    # One experiment's PBS outputs (and Gadi's job scripts and logs) removed: its fine-tune and its scoring are
    # submitted again, through Aspire 2A (the other four jobs would repeat the same resource lines at minutes of CI)
    redo = ("results/finetune/baseline", "results/evaluate/baseline", "results/jobs", "results/logs/scheduler",
            PBS_STATE)
    repo = with_site(seeded_copy(gadi_run[0], tmp_path / "repo", *redo), project="12345678")
    run_profile(repo, "aspire2a", "--", SUMMARY)
    submitted = calls(pbs_env, "qsub")
    finetune = next(a for a in submitted if a[1] == "finetune.baseline")
    assert finetune[:finetune.index("-j")] == ["-N", "finetune.baseline", "-P", "12345678", "-q", "normal", "-l",
                                              "select=1:ncpus=16:ngpus=1:mpiprocs=1:mem=110GB", "-l",
                                              "walltime=02:00:00"]
    assert {"finetune.baseline", "evaluate.baseline"} <= {a[1] for a in submitted}
    for job in submitted:  # Aspire 2A's project and select syntax on every job, none of Gadi's -l ngpus=
        assert job[job.index("-P") + 1] == "12345678" and any(a.startswith("select=") for a in job), job
    assert (repo / "results/summary.csv").exists()


@pytest.mark.e2e
def test_failed_and_walltime_killed_jobs_fail_the_run_and_keep_their_logs(gadi_run, tmp_path, pbs_env, monkeypatch):
    monkeypatch.setenv("PBS_EMULATOR_TIME_SCALE", "0.05")  # one emulated minute of walltime lasts 3 s
    repo = with_site(seeded_copy(gadi_run[0], tmp_path / "repo", "results/finetune", "results/logs/scheduler",
                                 PBS_STATE),
                     project="ab12")
    quick = yaml.safe_load((repo / "tests/quick.yaml").read_text())
    # `broken` passes the checks (a key LitGPT knows; the check reads keys, not values) but litgpt refuses the
    # value: the job exits non-zero
    quick["experiments"] = [{"name": "slow"},
                            {"name": "broken", "finetune": {"extra": {"eval": {"max_iters": "many"}}}}]
    (repo / "tests/quick.yaml").write_text(yaml.safe_dump(quick))
    # one emulated minute for `slow`, an hour for `broken` (resource values are expressions of the wildcards)
    runtime = "finetune:runtime=1 if wildcards.experiment == 'slow' else 60"
    proc = run_profile(repo, "gadi", "--keep-going", "--set-resources", runtime,
                       "--", "results/finetune/slow/summary.json", "results/finetune/broken/summary.json", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"job \d+\.emu-pbs \(finetune\.slow\) killed for exceeding its walltime 00:01:00"
                     r" \(Exit_status 271\)", output)
    assert re.search(r"job \d+\.emu-pbs \(finetune\.broken\) exited with 1", output)
    assert "Error in rule finetune" in output
    logs = repo / "results/logs/scheduler"
    (slow_e,) = logs.glob("finetune.slow.e*")
    assert "=>> PBS: job killed: walltime" in slow_e.read_text()
    (broken_e,) = logs.glob("finetune.broken.e*")
    assert broken_e.stat().st_size > 0
    # Snakemake removes a failed job's outputs; its log says why
    rule_log = (repo / "results/logs/finetune/broken.log").read_text()
    assert "litgpt finetune_full exited with 2" in rule_log and "max_iters" in rule_log


@pytest.mark.e2e
def test_ctrl_c_of_a_pbs_run_leaves_no_job_behind(gadi_run, tmp_path, pbs_env):
    """Ctrl-C while a fine-tune job runs: cluster-generic calls llmhpc-pbs-cancel, which qdels the run's jobs; the
    emulated server then holds no queued or running job, and the fine-tune's outputs are not there."""
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = with_site(seeded_copy(gadi_run[0], tmp_path / "repo", "results/finetune/baseline", PBS_STATE), project="ab12")
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/gadi", "--configfile", "config/config.yaml",
           "tests/quick.yaml", "test-site.yaml", "--seconds-between-status-checks", "5",
           "results/finetune/baseline/summary.json"]
    log = open(tmp_path / "snakemake.out", "w+")
    # its own process group, as a shell gives a foreground command: Ctrl-C signals the whole group
    proc = subprocess.Popen(cmd, cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo / "src")), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)

    def jobs():
        return [json.loads(p.read_text()) for p in sorted((pbs_env / "jobs").glob("*.json"))]

    try:
        running, deadline = None, time.monotonic() + 600
        while running is None and time.monotonic() < deadline and proc.poll() is None:
            running = next((j for j in jobs() if j["Job_Name"] == "finetune.baseline" and j["job_state"] == "R"), None)
            time.sleep(0.5)
        log.seek(0)
        assert running, f"no fine-tune job ran:\n{log.read()[-4000:]}"
        # Snakemake's remote executor takes its jobs off the active list while it checks their states, and a Ctrl-C
        # in that moment cancels none of them: the Ctrl-C comes 2 s after the first check's qstat, between that
        # check's end and the next one (5 s of sleep apart here).
        wait_for(lambda: calls(pbs_env, "qstat"), timeout=120)
        time.sleep(2)
        assert next(j for j in jobs() if j["Job_Name"] == "finetune.baseline")["job_state"] == "R"
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log.seek(0)
    output = log.read()
    assert rc != 0, output[-3000:]
    job_id = f"{running['_seq']}.emu-pbs"
    assert any(job_id in argv for argv in calls(pbs_env, "qdel")), (calls(pbs_env, "qdel"), output[-3000:])
    deadline = time.monotonic() + 30
    while any(j["job_state"] in ("Q", "R", "E") for j in jobs()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [j["Job_Name"] for j in jobs() if j["job_state"] in ("Q", "R", "E")] == [], output[-3000:]
    assert not (repo / "results/finetune/baseline/summary.json").exists()


@pytest.mark.e2e
def test_walltime_killed_pbs_finetune_resumes_on_rerun(gadi_run, tmp_path, pbs_env, monkeypatch):
    """Through the Gadi profile and the PBS emulator: once its first step checkpoint is whole the fine-tune is
    paused (SIGSTOP) and its walltime cut to one minute (qalter, as a PBS manager may), so that PBS kills it (SIGTERM,
    SIGKILL, Exit_status 271) whatever this machine's speed; the same command again resumes from that checkpoint.
    The run starts from a copy of the Gadi run's tree less its fine-tunes (and the first server's status cache), the
    quick config cut to one resumable experiment (tests/resume_helpers.py)."""
    import os
    import subprocess
    import sys

    from resume_helpers import TARGET, pause_the_finetune_job, resumable_quick

    monkeypatch.setenv("PBS_EMULATOR_TIME_SCALE", "0.2")  # an emulated minute of walltime lasts 12 s
    repo = with_site(seeded_copy(gadi_run[0], tmp_path / "repo", "results/finetune", PBS_STATE), project="ab12")
    resumable_quick(repo)
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
