"""Stock `litgpt finetune_full` killed mid-run (SIGKILL once a step checkpoint is whole) resumes with LitGPT's own
`resume: auto` from the step checkpoint the stage keeps (llmhpc.train.resume.prepare), passing over one that the
kill cut short, and ends with the weights of an uninterrupted run (one CPU process, fp32)."""

from __future__ import annotations

import os
import subprocess

import fsdp2_tiny
import pytest
import torch
import yaml

from llmhpc.train import resume
from llmhpc.train.registry import STOCK

pytestmark = pytest.mark.litgpt

ENV = dict(os.environ, OMP_NUM_THREADS="1", JSONARGPARSE_DEPRECATION_WARNINGS="off", PYTHONUNBUFFERED="1")


def resumable(root, out: str):
    path = fsdp2_tiny.config(root, out)  # 12 steps of 8 samples, 4 micro batches each
    cfg = yaml.safe_load(path.read_text())
    cfg["resume"], cfg["train"]["save_interval"] = "auto", 2
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def stock(config) -> subprocess.Popen:
    return subprocess.Popen(STOCK.command("full", config), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def weights(out_dir) -> dict:
    return torch.load(out_dir / "final/lit_model.pth", weights_only=True)["model"]


def test_killed_stock_run_resumes_to_the_uninterrupted_weights(tmp_path):
    root = fsdp2_tiny.make(tmp_path, n=96)
    reference = stock(resumable(root, "whole"))  # meanwhile: the uninterrupted run
    config, out, lines = resumable(root, "killed"), root / "killed", []
    resume.prepare(out, config, lines.append)  # what the stage does before every run: records the settings
    fsdp2_tiny.kill_once_whole(stock(config), out / "step-000004/prompt_style.yaml")
    text, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, text[-3000:]
    whole = [f for f in resume.step_folders(out) if resume.is_complete(f)]
    newest = whole[-1]
    (newest / "prompt_style.yaml").unlink()  # as if the kill had come during this save
    with open(newest / "lit_model.pth", "r+b") as fh:
        fh.truncate(1000)
    assert resume.prepare(out, config, lines.append) == whole[-2]
    assert not newest.exists() and any("half-written" in line for line in lines)
    proc = subprocess.run(STOCK.command("full", config), env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Resuming training from {whole[-2] / 'lit_model.pth'}" in proc.stdout + proc.stderr
    expected, resumed = weights(root / "whole"), weights(out)
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name


def test_a_ctrl_c_makes_stock_save_a_step_checkpoint_that_the_rerun_resumes(tmp_path):
    """SIGINT to stock finetune_full's process group (a Ctrl-C in the terminal) during training: it saves a step
    checkpoint at the end of the optimizer step it is in (LitGPT's own save: it counts as whole) and exits 130, so
    that the rerun resumes from it; stock LitGPT alone died where it stood."""
    import signal

    root = fsdp2_tiny.make(tmp_path, n=96)  # 12 steps: the signal comes at the first
    config = resumable(root, "ctrl_c")
    cfg = yaml.safe_load(config.read_text())
    cfg["train"]["save_interval"] = 1000  # no save of its own in the run
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    resume.prepare(root / "ctrl_c", config, lambda m: None)  # what the stage does before every run
    proc = subprocess.Popen(STOCK.command("full", config), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "iter 4 step 1 |" in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
    text = "".join(seen) + proc.communicate(timeout=300)[0]
    assert proc.returncode == 128 + signal.SIGINT, text[-3000:]
    (saved,) = resume.step_folders(root / "ctrl_c")
    assert resume.is_complete(saved) and 1 <= resume.step_of(saved) < 12, text[-3000:]
    assert "SIGINT: saving a step checkpoint" in text and not (root / "ctrl_c/final").exists()
    # whole, with this run's settings: what the stage resumes from (a rerun from one: the test above)
    assert resume.prepare(root / "ctrl_c", config, lambda m: None) == saved
