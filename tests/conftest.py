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
pytest_plugins = ["serve_fixtures"]
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


@pytest.fixture
def pbs_env(tmp_path, monkeypatch):
    """The PBS emulator and this environment's console scripts on PATH, a fresh emulated server."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(EMULATOR), str(Path(sys.executable).parent),
                                                os.environ["PATH"]]))
    home = tmp_path / "pbs-server"
    monkeypatch.setenv("PBS_EMULATOR_HOME", str(home))
    monkeypatch.setenv("PBS_EMULATOR_QUEUES", "gpuvolta,normal,copyq")
    monkeypatch.setenv("PBS_EMULATOR_KILL_DELAY", "0.5")
    monkeypatch.setenv("PBS_EMULATOR_QUEUE_DELAY", "0.1")
    missing = [c for c in CONSOLE_SCRIPTS if shutil.which(c) is None]
    assert not missing, f"console scripts {missing} not installed: `pip install -e .` (pyproject [project.scripts])"
    return home


# --------------------------------------------------------------------------------------------------- tiers
# A test says what it needs with a marker (pyproject.toml lists them). One with none of them is a unit test:
# pure Python in this process. The guard below makes that a checked fact rather than a hope, so that
# `pytest -m unit` stays the fast tier.
NEEDS = ("litgpt", "distributed", "snakemake", "browser", "slurm", "plots", "e2e", "subprocess")


def pytest_collection_modifyitems(config, items):
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
