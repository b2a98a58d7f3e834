"""The embedded default through a real Slurm (Debian's slurm-wlm, one node on this host) with profiles/slurm.

The cluster is started by the fixture (tests/slurm_cluster.py) and stopped at the end. Where Slurm is not
installed the tests skip, except in CI (CI=true), where they fail: CI installs slurm-wlm and munge.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import REPO, copy_repo, seeded_copy
from slurm_cluster import FAKE_GPUS, SlurmCluster, missing_binaries, node_shape

pytestmark = [pytest.mark.slurm, pytest.mark.snakemake, pytest.mark.e2e]


# The test node's shape for the workflow's site (profiles/slurm/site.yaml describes a generic GPU cluster, and
# leaves cores and memory to the user: the preflight refuses GPU jobs without them).
CPUS_PER_GPU = max(1, os.cpu_count() // FAKE_GPUS)
# Poll squeue every few seconds instead of the profile's 20 s: the jobs here take seconds.
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "3"]
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")


def unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}: .ci/run must install slurm-wlm and munge and run the tests as root")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster():
    missing = missing_binaries()
    if missing:
        unavailable(f"Slurm/munge binaries missing: {', '.join(missing)}")
    if os.geteuid() != 0:
        unavailable("the test Slurm needs root (slurmd starts jobs as their owner)")
    c = SlurmCluster().start()
    try:
        yield c
    finally:
        c.stop()


def site_override() -> dict:
    """The test node's GPUs, cores and memory (slurmd's RealMemory, so that no job asks for more than it has)."""
    return {"site": {"gpus_per_node": FAKE_GPUS, "cpus_per_node": os.cpu_count(),
                     "mem_per_node_gb": int(node_shape()["RealMemory"]) / 1000}}


def slurm_repo(dest):
    repo = copy_repo(dest)
    (repo / "tests/slurm_site.yaml").write_text(yaml.safe_dump(site_override()))
    return repo


def snakemake_cmd(*args):
    return [sys.executable, "-m", "snakemake", "--configfile", "config/config.yaml", "tests/quick.yaml", "tests/slurm_site.yaml",
            *args]


def run(cluster, repo, cmd, env_extra=None, timeout=1200):
    env = dict(cluster.env, PYTHONPATH=str(repo / "src"), **(env_extra or {}))
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-8000:]}\n{cluster.logs()}")
    return out


def slurm_jobs(cluster, output: str) -> dict[str, dict]:
    """Slurm's own record of every job Snakemake said it submitted, by Slurm job id."""
    return {slurm_id: cluster.job(slurm_id) for _, slurm_id in SUBMITTED.findall(output)}


def rule_of(job: dict) -> str:
    # The plugin puts rule_<rule>[_wildcards_<w>] into the job's comment.
    return re.match(r"rule_([a-z_]+?)(?:_wildcards_.*)?$", job["Comment"]).group(1)


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The quick config through profiles/slurm up to the summary table: every compute job (convert, fine-tunes,
    evaluations) as a Slurm job. The plots, slides and submission after it are local rules, run by
    tests/workflow/test_embedded_default.py."""
    repo = slurm_repo(tmp_path_factory.mktemp("slurm") / "repo")
    t0 = time.perf_counter()
    out = run(cluster, repo, snakemake_cmd("--profile", "profiles/slurm", *FAST_STATUS,
                                           "--slurm-keep-successful-logs", "results/summary.csv"))
    print(f"embedded default (quick) through Slurm: {time.perf_counter() - t0:.0f} s")
    return repo, out, slurm_jobs(cluster, out)


def test_compute_stages_ran_as_slurm_jobs(slurm_run):
    repo, out, jobs = slurm_run
    experiments = [e["name"] for e in yaml.safe_load((repo / "tests/quick.yaml").read_text())["experiments"]]
    rules = sorted(rule_of(j) for j in jobs.values())
    # convert, one fine-tune per experiment, scoring of the base model and of every fine-tune; downloads, the
    # environment check, configs and the summary are local rules and stay on the login node.
    assert rules == sorted(["convert", *["finetune"] * len(experiments), *["evaluate"] * (len(experiments) + 1)])
    for slurm_id, job in jobs.items():
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (slurm_id, job)
        assert job["NodeList"] == job["BatchHost"] != ""
        # The job's Slurm log holds what Snakemake ran inside the job.
        log = next((repo / ".snakemake/slurm_logs").rglob(f"{slurm_id}.log"))
        assert "Finished jobid" in log.read_text() or "1 of 1 steps (100%) done" in log.read_text()


def test_results_and_summary_exist(slurm_run):
    repo, out, jobs = slurm_run
    summary = pd.read_csv(repo / "results/summary.csv")
    assert {"baseline", "mbs16"} <= set(summary["experiment"])
    for model in ("base", "baseline", "mbs16"):
        assert (repo / f"results/evaluate/{model}/metrics.json").is_file()


def test_finetune_job_asks_slurm_for_its_nodes_and_gpus(slurm_run):
    repo, out, jobs = slurm_run
    finetunes = [j for j in jobs.values() if rule_of(j) == "finetune"]
    assert finetunes
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    devices, nodes = config["finetune"]["devices"], config["finetune"]["num_nodes"]
    for job in finetunes:
        assert job["NumNodes"] == str(nodes)
        # One task per GPU (profile: tasks_per_gpu 1) and the experiment's devices as GPUs per node.
        assert job.get("TresPerNode") == f"gres:gpu:{devices}", job
        assert job["NumTasks"] == str(nodes * devices)
        # Each task gets the CPUs of one GPU of the site's node, not the login node's core count.
        assert job["CPUs/Task"] == str(CPUS_PER_GPU), job
    # The launch the fine-tune recorded names this Slurm job.
    for exp in ("baseline", "mbs16"):
        summary = yaml.safe_load((repo / f"results/finetune/{exp}/summary.json").read_text())
        assert summary["launch"]["scheduler"] == "slurm"
        assert summary["launch"]["job_id"] in jobs


def test_scoring_jobs_ask_slurm_for_one_gpu(slurm_run):
    repo, out, jobs = slurm_run
    scoring = [j for j in jobs.values() if rule_of(j) == "evaluate"]
    assert len(scoring) == 3
    for job in scoring:
        assert job.get("TresPerNode") == "gres:gpu:1", job
        assert job["NumTasks"] == "1" and job["CPUs/Task"] == str(CPUS_PER_GPU), job


def test_ctrl_c_leaves_no_job_behind(cluster, slurm_run, tmp_path):
    repo = seeded_copy(slurm_run[0], tmp_path / "repo", "results/finetune/baseline")
    env = dict(cluster.env, PYTHONPATH=str(repo / "src"))
    log = open(tmp_path / "snakemake.out", "w+")
    # Its own process group, as a shell gives a foreground command: Ctrl-C signals the whole group.
    proc = subprocess.Popen(snakemake_cmd("--profile", "profiles/slurm", *FAST_STATUS,
                                          "results/finetune/baseline/summary.json"),
                            cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        running = None
        deadline = time.monotonic() + 600
        while running is None and time.monotonic() < deadline and proc.poll() is None:
            for job_id in cluster.queue():
                job = cluster.job(job_id)
                if rule_of(job) == "finetune" and job["JobState"] == "RUNNING":
                    running = job_id
            time.sleep(1)
        log.seek(0)
        assert running, f"no fine-tune job ran in Slurm:\n{log.read()[-4000:]}"
        # Snakemake's remote executor takes its jobs off the active list while it checks their states, and a Ctrl-C
        # in that moment cancels none of them: the first check (3 s after the start, FAST_STATUS) is past now; the
        # next comes 10 s after it, and the fine-tune runs for longer.
        time.sleep(5)
        assert cluster.job(running)["JobState"] == "RUNNING"
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log.seek(0)
    output = log.read()
    assert rc != 0, output[-3000:]
    # scancel is asynchronous: the job may be completing for a moment.
    deadline = time.monotonic() + 60
    while running in cluster.queue() and time.monotonic() < deadline:
        time.sleep(1)
    assert running not in cluster.queue(), output[-3000:]
    assert cluster.queue() == [], output[-3000:]
    assert cluster.job(running)["JobState"] == "CANCELLED", output[-3000:]
    assert not (repo / "results/finetune/baseline/summary.json").exists()


TIME_LIMITED = "results/finetune/baseline/summary.json"


@pytest.fixture(scope="module")
def time_limited_first_run(cluster, slurm_run, tmp_path_factory):
    """The first run of test_finetune_killed_by_its_time_limit_resumes_on_rerun, in a thread of its own: once its
    fine-tune's first step checkpoint is whole the job is paused (SIGSTOP) and its time limit cut to one minute, and
    the run is left to end. Most of that is waiting (for the job's minute to pass, for Slurm's periodic check of time
    limits, for the executor's status checks, whose pause grows by 10 s each time no job finished), so it runs while
    the bare-name runs below use the node's other GPU; the test waits for it and checks what it left.
    Started after the Ctrl-C test, which wants an empty queue at its end."""
    import threading

    from resume_helpers import pause_the_finetune_job, resumable_quick

    tmp = tmp_path_factory.mktemp("time-limit")
    repo = seeded_copy(slurm_run[0], tmp / "repo", "results/finetune")
    resumable_quick(repo)
    cmd = snakemake_cmd("--profile", "profiles/slurm", *FAST_STATUS, TIME_LIMITED)
    log = open(tmp / "first.out", "w+")
    first = subprocess.Popen(cmd, cwd=repo, env=dict(cluster.env, PYTHONPATH=str(repo / "src")), stdout=log,
                             stderr=subprocess.STDOUT)
    state = {"repo": repo, "cmd": cmd, "log": log}

    def first_run():
        try:
            pause_the_finetune_job(first, repo)
            (state["job_id"],) = [j for j in cluster.queue() if rule_of(cluster.job(j)) == "finetune"]
            subprocess.run(["scontrol", "update", f"JobId={state['job_id']}", "TimeLimit=1"], env=cluster.env,
                           check=True, capture_output=True, timeout=30)
            state["returncode"] = first.wait(300)
        except BaseException as e:  # raised again by the test
            state["error"] = e
        finally:
            if first.poll() is None:
                first.kill()

    state["thread"] = threading.Thread(target=first_run, name="time-limited-first-run", daemon=True)
    state["thread"].start()
    yield state
    state["thread"].join(timeout=600)  # where the test did not run
    if first.poll() is None:
        first.kill()
    log.close()


@pytest.fixture(scope="module")
def shipped_profile_by_bare_name(cluster, slurm_run, time_limited_first_run, tmp_path_factory):
    """profiles/slurm by its bare name, before and after the set-up step (`llmhpc.cluster.profiles install`):
    first with the shipped site's unknown node shape (cpus_per_node, mem_per_node_gb: null), which the preflight
    refuses, then with the test node's, the base model's conversion and its evaluation remade in a copy of the
    module run's tree. (The time-limited fine-tune's first run, paused on the node's other GPU, runs meanwhile.)"""
    tmp = tmp_path_factory.mktemp("bare-name")
    repo = seeded_copy(slurm_run[0], tmp / "repo", "results/checkpoints/base", "results/evaluate/base")
    (repo / "tests/slurm_site.yaml").write_text(yaml.safe_dump({"site": {"gpus_per_node": FAKE_GPUS}}))
    home = tmp / "home"
    user_env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    env = dict(cluster.env, PYTHONPATH=str(repo / "src"), **user_env)
    # Before the set-up step Snakemake does not find `slurm`: it does not look in profiles/.
    before = subprocess.run(snakemake_cmd("--profile", "slurm", "-n"), cwd=repo, env=env, capture_output=True,
                            text=True, timeout=300)
    install = subprocess.run([sys.executable, "-m", "llmhpc.cluster.profiles", "install"], cwd=repo, env=env,
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr
    unsized = subprocess.run(snakemake_cmd("--profile", "slurm", "results/evaluate/base/metrics.json"), cwd=repo,
                             env=env, capture_output=True, text=True, timeout=300)
    (repo / "tests/slurm_site.yaml").write_text(yaml.safe_dump(site_override()))
    out = run(cluster, repo, snakemake_cmd("--profile", "slurm", *FAST_STATUS, "--verbose",
                                           "results/evaluate/base/metrics.json"), env_extra=user_env)
    return repo, home, before, unsized, out, slurm_jobs(cluster, out)


def test_profile_by_bare_name_after_install(shipped_profile_by_bare_name):
    repo, home, before, _, out, jobs = shipped_profile_by_bare_name
    assert before.returncode != 0 and "profile directory given (slurm)" in before.stderr
    installed = home / ".config/snakemake/slurm"
    assert installed.is_symlink() and installed.resolve() == (repo / "profiles/slurm").resolve()
    assert "Using profiles slurm and workflow specific profile profiles/default" in out
    assert sorted(rule_of(j) for j in jobs.values()) == ["convert", "evaluate"]
    assert all(j["JobState"] == "COMPLETED" for j in jobs.values())
    assert (repo / "results/checkpoints/base/lit_model.pth").is_file()


def test_unknown_node_shape_is_refused_before_any_job(shipped_profile_by_bare_name):
    """profiles/slurm as shipped (cpus_per_node, mem_per_node_gb: null): refused by the preflight, naming the keys,
    before anything is submitted, instead of GPU jobs that ask for a laptop's memory and fail after the queue.
    Described, the scoring job asks for its GPU's share of the node's cores and memory."""
    _, _, _, unsized, out, jobs = shipped_profile_by_bare_name
    assert unsized.returncode != 0
    assert "site.cpus_per_node (cores) and site.mem_per_node_gb (memory in GB)" in unsized.stderr, unsized.stderr
    assert "has been submitted" not in unsized.stdout + unsized.stderr
    calls = re.findall(r"sbatch call: (sbatch .*)", out)
    scoring = [c for c in calls if "rule_evaluate" in c]
    assert len(scoring) == 1, out[-4000:]
    assert f"--cpus-per-task={CPUS_PER_GPU}" in scoring[0] and "--gres" in scoring[0], scoring[0]
    from llmhpc.cluster.resources import gpu_job_mem_mb

    model = yaml.safe_load((REPO / "config/config.yaml").read_text())["model"]["name"]
    mem_mb = gpu_job_mem_mb({**site_override()["site"], "scheduler": "slurm"}, model, 1)  # a GPU's share of the node
    assert f"--mem {mem_mb} " in scoring[0], scoring[0]
    assert any("rule_convert" in c and "--cpus-per-task" in c for c in calls)  # CPU jobs keep their threads
    assert all(j["JobState"] == "COMPLETED" for j in jobs.values()), jobs


def test_finetune_killed_by_its_time_limit_resumes_on_rerun(cluster, time_limited_first_run):
    """Once its first step checkpoint is whole the fine-tune is paused (SIGSTOP) and its time limit cut to one
    minute, so that Slurm kills it (TIMEOUT) whatever this machine's speed; the same command again resumes it.
    (The first run is the fixture's, begun beside the bare-name runs.)"""
    import json

    state = time_limited_first_run
    state["thread"].join(timeout=900)
    assert not state["thread"].is_alive(), "the first run did not end within 900 s"
    if "error" in state:
        raise state["error"]
    repo, cmd, log = state["repo"], state["cmd"], state["log"]
    target, out = TIME_LIMITED, repo / "results/finetune/baseline/out"
    assert state["returncode"] != 0
    log.seek(0)
    assert cluster.job(state["job_id"])["JobState"] == "TIMEOUT", log.read()[-3000:]
    assert (out / "step-000001/lit_model.pth").is_file() and not (out / "final").exists()
    # Slurm's time limit sends SIGTERM (with SIGCONT) before SIGKILL: the fine-tune may save one more step then, or
    # be killed halfway through that save (its weights written, not yet the files LitGPT writes after them), which
    # the rerun must pass over for the newest whole one
    from llmhpc.train.resume import is_complete

    saved = max(int(p.name.split("-")[1]) for p in out.glob("step-*") if is_complete(p))

    run(cluster, repo, cmd)
    summary = json.loads((repo / target).read_text())
    assert summary["resumed_from_step"] == saved and summary["exit_code"] == 0
