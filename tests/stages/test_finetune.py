"""The finetune stage's own checks, without a fine-tune (the real runs are in tests/train/test_litgpt_run.py)."""

from __future__ import annotations

import dataclasses

import pytest

from llmhpc.stages import finetune
from llmhpc.train import registry


@pytest.mark.unit
def test_a_fine_tune_that_exited_0_without_weights_fails_the_stage_naming_the_file(tmp_path):
    (tmp_path / "out/final").mkdir(parents=True)
    (tmp_path / "out/final/model_config.yaml").write_text("name: tiny\n")  # the side files, not the weights
    with pytest.raises(RuntimeError, match=r"exited with 0 but wrote no .*out/final/lit_model\.pth; see ft\.stdout"):
        finetune.check_final_weights(tmp_path / "out", "ft.stdout")
    (tmp_path / "out/final/lit_model.pth").write_bytes(b"weights")
    finetune.check_final_weights(tmp_path / "out", "ft.stdout")


# An engine's two attempts, as the stage sees them: the first logs steps 1-12 (1 s a step), whole checkpoint at step
# 10 at +10 s, its log last written at +12 s, then is killed; the second resumes from step 10 and runs steps 11-29.
FAKE_ENGINE = r'''
import csv, os, signal, sys, time
from pathlib import Path

import yaml

cfg = yaml.safe_load(Path(sys.argv[sys.argv.index('--config') + 1]).read_text())
out = Path(cfg["out_dir"])
log = out / "logs/csv/version_0"
log.mkdir(parents=True, exist_ok=True)
first = not (out / "step-000010").exists()
steps = range(1, 13) if first else range(11, 30)
with open(log / "metrics.csv", "w", newline="") as fh:
    writer = csv.DictWriter(fh, ["loss", "iter", "step", "epoch", "iter_time", "tokens", "total_tokens", "learning_rate"])
    writer.writeheader()
    for s in steps:
        writer.writerow({"loss": 5 - s / 10, "iter": 4 * s, "step": 4 * s, "epoch": 0, "iter_time": 1.0, "tokens": 100 * s,
                         "total_tokens": 100 * s, "learning_rate": 0.01})
if first:
    (out / "step-000010").mkdir()
    (out / "step-000010/resume.json").write_text("{}")
    now = time.time()
    os.utime(out / "step-000010/resume.json", (now + 10, now + 10))
    os.utime(log / "metrics.csv", (now + 12, now + 12))
    print("Epoch 1 | iter 48 step 12 | loss train: 3.800", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
(out / "final").mkdir()
(out / "final/lit_model.pth").write_bytes(b"weights")
print("Number of trainable parameters: 1,000")
print("| Token Counts\n| - Total Tokens (w/ Padding) :  1900\n| - Training Time             :  19.00 s\n"
      "| - Tok/sec                   :  100.00 tok/s")
'''


def stage_run(tmp_path, monkeypatch):
    """run_stage on the fake engine: settings of 8-sample steps of 4 micro batches, resume: auto."""

    import yaml

    engine = tmp_path / "engine.py"
    engine.write_text(FAKE_ENGINE)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt/model_config.yaml").write_text("n_layer: 2\nn_embd: 32\nname: tiny\n")
    config = tmp_path / "litgpt.yaml"
    config.write_text(yaml.safe_dump({"checkpoint_dir": str(tmp_path / "ckpt"), "out_dir": str(tmp_path / "out"),
                                      "resume": "auto", "train": {"global_batch_size": 8, "micro_batch_size": 2}}))
    fake = dataclasses.replace(registry.FSDP2, program=str(engine))  # the fsdp2 entry, its program this script
    monkeypatch.setitem(registry.ENGINES, "fsdp2", fake)
    settings = {"method": "full", "engine": "fsdp2", "precision": "32-true", "devices": 1, "num_nodes": 1,
                "global_batch_size": 8, "micro_batch_size": 2}

    def run():
        return finetune.run_stage(config, tmp_path / "ckpt", tmp_path / "out", tmp_path / "ft.stdout",
                                  tmp_path / "metrics.csv", tmp_path / "summary.json", settings, None, 1,
                                  log=lambda m: None)
    return run


@pytest.mark.subprocess
def test_a_resumed_run_is_scored_over_every_attempt_and_its_log_starts_at_step_1(tmp_path, monkeypatch):
    """Killed at step 12, resumed from step 10, 29 steps: samples/s is the run's 29 steps over the attempts' summed
    training time (12 s + 19 s), not over the last attempt's 19 s, and the two steps done again count once (they
    are lost time); the lost time is the killed attempt's 2 s after its checkpoint; metrics.csv runs from step 1."""
    import csv
    import json

    run = stage_run(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError, match="exited with -9"):
        run()
    summary = run()
    assert summary["resumed_from_step"] == 10 and summary["attempts"] == 2
    assert summary["training_time_s"] == 31.0 and summary["last_attempt_training_time_s"] == 19.0
    assert summary["samples_per_s"] == round(29 * 8 / 31, 3)  # the last attempt alone would say 29 x 8 / 19 = 12.2
    assert summary["tokens_per_s"] == round(100.0 * 29 / 31, 2) and summary["steps"] == 29
    assert summary["lost_time_s"] == pytest.approx(2.0, abs=0.01)
    assert json.loads((tmp_path / "summary.json").read_text())["lost_time_s"] == summary["lost_time_s"]
    with open(tmp_path / "metrics.csv") as fh:
        steps = [int(row["iter"]) // 4 for row in csv.DictReader(fh)]
    assert steps == list(range(1, 30))
    assert not (tmp_path / "out/attempts.json").exists()  # gone with the step checkpoints
