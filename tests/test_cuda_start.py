"""llmhpc.cuda_start: CUDA started in a thread that the job (or the interpreter's shutdown) joins."""

import importlib
import subprocess
import sys

import pytest

from llmhpc import cuda_start


@pytest.fixture
def fresh(monkeypatch):
    for key in cuda_start.LOCAL_RANK + ("CUDA_VISIBLE_DEVICES",):
        monkeypatch.delenv(key, raising=False)
    return importlib.reload(cuda_start)


def test_local_rank_from_the_launchers(fresh, monkeypatch):
    assert fresh.local_rank() == 0
    monkeypatch.setenv("SLURM_LOCALID", "3")
    assert fresh.local_rank() == 3
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's wins
    assert fresh.local_rank() == 1


def test_no_visible_gpu_starts_nothing(fresh, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert fresh.begin() is None
    fresh.finish()  # nothing to wait for


def test_one_thread_per_process_not_a_daemon(fresh):
    thread = fresh.begin()
    assert thread is not None and not thread.daemon
    assert fresh.begin() is thread
    fresh.finish()
    assert not thread.is_alive()


@pytest.mark.subprocess
def test_a_job_that_never_joins_still_exits_cleanly(tmp_path):
    """The thread is joined by the interpreter's shutdown where the job forgot to: the exit code is the job's."""
    code = "from llmhpc import cuda_start; cuda_start.begin(); print('done')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr
