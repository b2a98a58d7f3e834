import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
# Fixtures kept beside the tests that use them, registered here: a second conftest.py would shadow this one.
pytest_plugins = ["serve_fixtures", "real_weights"]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


@functools.cache
def repo_files() -> tuple[str, ...]:
    """Files a clean clone would have: tracked plus untracked-but-not-ignored (work in progress)."""
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, text=True, check=True).stdout
    return tuple(f for f in out.splitlines() if (REPO / f).is_file())


def copy_repo(dest: Path) -> Path:
    for rel in repo_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    return dest


def seeded_copy(finished: Path, dest: Path, *remove: str) -> Path:
    """A copy of a finished run's tree, Snakemake's records included, less the outputs in `remove`: a command in the
    copy runs the jobs that remake those (and what depends on them among its targets), not the jobs before them."""
    shutil.copytree(finished, dest, symlinks=True)
    for rel in remove:
        shutil.rmtree(dest / rel)
    return dest


def snakemake(workdir: Path, *args, check=True, timeout=900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"))
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def default_config() -> dict:
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


@pytest.fixture
def repo_copy(tmp_path):
    return copy_repo(tmp_path / "repo")


EMULATOR = REPO / "tests/pbs_emulator"
CONSOLE_SCRIPTS = ("llmhpc-pbs-submit", "llmhpc-pbs-status", "llmhpc-pbs-cancel")


def pbs_server(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """The PBS emulator and this environment's console scripts on PATH, a fresh emulated server in `home`."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(EMULATOR), str(Path(sys.executable).parent),
                                                os.environ["PATH"]]))
    monkeypatch.setenv("PBS_EMULATOR_HOME", str(home))
    monkeypatch.setenv("PBS_EMULATOR_QUEUES", "gpuvolta,normal,copyq")
    monkeypatch.setenv("PBS_EMULATOR_KILL_DELAY", "0.5")
    monkeypatch.setenv("PBS_EMULATOR_QUEUE_DELAY", "0.1")
    missing = [c for c in CONSOLE_SCRIPTS if shutil.which(c) is None]
    assert not missing, f"console scripts {missing} not installed: `pip install -e .` (pyproject [project.scripts])"
    return home


@pytest.fixture
def pbs_env(tmp_path, monkeypatch):
    return pbs_server(monkeypatch, tmp_path / "pbs-server")


# --------------------------------------------------------------------------------------------------- tiers
# A test says what it needs with a marker (pyproject.toml lists them). One with none of them is a unit test:
# pure Python in this process. The guard below makes that a checked fact rather than a hope, so that
# `pytest -m unit` stays the fast tier.
NEEDS = ("litgpt", "distributed", "snakemake", "browser", "slurm", "plots", "e2e", "subprocess", "registry")


# ------------------------------------------------------------------------------------------------ two workers
# CI runs `pytest -n 2 --dist loadfile`: pytest-xdist hands out whole files, in collection order (pyproject.toml
# turns off its reordering by test count, which put these few-test files last). The files that take minutes go
# first, longest first, so that the short ones fill in behind them and the two workers end together rather than one
# finishing a long file alone. Seconds of each in a full `pytest -n 2 --dist loadfile` on 2 cores (junit times; only
# their order matters), to be kept roughly current.
LONG_FILES = {
    "tests/workflow/test_embedded_default.py": 1000,  # with the killed fine-tune's resume, seeded from its run
    "tests/workflow/test_slurm_profile.py": 700,
    "tests/workflow/test_pbs_profiles.py": 620,  # with the walltime-killed fine-tune's resume
    "tests/outputs/test_slides.py": 290,
    "tests/train/test_fsdp2_real_weights.py": 350,  # a guess for free cores: 1151 s alone at load 8-9 on 2 shared ones
    "tests/train/test_litgpt_run.py": 220,
    "tests/train/test_litgpt_resume.py": 130,
    "tests/train/test_fsdp2_resume.py": 125,
    "tests/eval/test_real_weights.py": 195,
    "tests/serve/test_serve_real_weights.py": 60,
    "tests/sources/test_gguf.py": 104,
    "tests/eval/test_fast_scorer.py": 90,
    "tests/serve/test_bench_serve.py": 86,
    "tests/outputs/test_plots.py": 74,
    "tests/train/test_fsdp2_lora_distributed.py": 73,
    "tests/stages/test_weights.py": 62,
    "tests/eval/test_lmeval_crosscheck.py": 55,
    "tests/test_workloads.py": 54,
}


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each worker's torch takes its share of the cores, not all of them: two workers' thread pools on the same cores
    # oversubscribe them and slow both. Processes a test starts choose their own threads.
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -LONG_FILES.get(item.nodeid.split("::")[0], 0))  # stable: the rest keep their order
    for item in items:
        if "pbs_env" in getattr(item, "fixturenames", ()):  # the PBS emulator's qsub/qstat/qdel are programs
            item.add_marker(pytest.mark.subprocess)
        if "chromium" in getattr(item, "fixturenames", ()):  # the fixture finds the real browser
            item.add_marker(pytest.mark.browser)
        if not any(item.get_closest_marker(name) for name in NEEDS):
            item.add_marker(pytest.mark.unit)


class SubprocessInUnitTest(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request, monkeypatch):
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args, **kwargs):
        raise SubprocessInUnitTest(f"{request.node.nodeid} is a unit test but starts a process ({args[:1]}): mark it"
                                   f" with what it needs ({', '.join(NEEDS)})")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "system", refuse)


@pytest.fixture(scope="session", autouse=True)
def _processes_started_once_before_the_unit_guard():
    """What starts a process once per session, done before any unit test's guard is up: `git ls-files` (copy_repo
    reads it) and importing snakemake.cli, whose executor plugins load then (the slurm one runs `which sacct`)."""
    repo_files()
    import snakemake.cli  # noqa: F401
