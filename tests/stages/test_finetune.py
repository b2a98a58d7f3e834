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


def training_data(tmp_path, records: int) -> dict:
    """A data directory of `records` training records, as the YAML's data section names it."""
    import json

    data = tmp_path / "data"
    data.mkdir()
    record = {"instruction": "i", "input": "", "output": "o"}
    (data / "train.json").write_text(json.dumps([record] * records))
    (data / "val.json").write_text(json.dumps([record]))
    return {"class_path": "litgpt.data.JSON", "init_args": {"json_path": str(data)}}


def stage_run(tmp_path, monkeypatch, program=FAKE_ENGINE, records=232, global_batch=8, micro=2):
    """run_stage on a fake engine: by default the resumed one's settings, 8-sample steps of 4 micro batches over 232
    records (its 29 steps), resume: auto."""

    import yaml

    engine = tmp_path / "engine.py"
    engine.write_text(program)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt/model_config.yaml").write_text("n_layer: 2\nn_embd: 32\nname: tiny\n")
    config = tmp_path / "litgpt.yaml"
    config.write_text(yaml.safe_dump({"checkpoint_dir": str(tmp_path / "ckpt"), "out_dir": str(tmp_path / "out"),
                                      "resume": "auto", "data": training_data(tmp_path, records),
                                      "train": {"global_batch_size": global_batch, "micro_batch_size": micro}}))
    fake = dataclasses.replace(registry.FSDP2, program=str(engine))  # the fsdp2 entry, its program this script
    monkeypatch.setitem(registry.ENGINES, "fsdp2", fake)
    settings = {"method": "full", "engine": "fsdp2", "precision": "32-true", "devices": 1, "num_nodes": 1,
                "global_batch_size": global_batch, "micro_batch_size": micro}

    def run():
        return finetune.run_stage(config, tmp_path / "ckpt", tmp_path / "out", tmp_path / "ft.stdout",
                                  tmp_path / "metrics.csv", tmp_path / "summary.json", settings, None, 1,
                                  log=lambda m: None)
    return run


@pytest.mark.subprocess
def test_a_resumed_run_is_scored_over_every_attempt_and_its_log_starts_at_step_1(tmp_path, monkeypatch):
    """Killed at step 12, resumed from step 10, 29 steps: samples/s is the run's 232 records over the attempts'
    summed training time (12 s + 19 s), not over the last attempt's 19 s, and the two steps done again count once
    (they are lost time); the lost time is the killed attempt's 2 s after its checkpoint; metrics.csv runs from
    step 1."""
    import csv
    import json

    run = stage_run(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError, match="exited with -9"):
        run()
    summary = run()
    assert summary["resumed_from_step"] == 10 and summary["attempts"] == 2
    assert summary["training_time_s"] == 31.0 and summary["last_attempt_training_time_s"] == 19.0
    assert summary["trained_samples"] == 232 == 29 * 8
    assert summary["samples_per_s"] == round(232 / 31, 3)  # the last attempt alone would say 232 / 19 = 12.2
    assert summary["tokens_per_s"] == round(100.0 * 29 / 31, 2) and summary["steps"] == 29
    assert summary["lost_time_s"] == pytest.approx(2.0, abs=0.01)
    assert json.loads((tmp_path / "summary.json").read_text())["lost_time_s"] == summary["lost_time_s"]
    with open(tmp_path / "metrics.csv") as fh:
        steps = [int(row["iter"]) // 4 for row in csv.DictReader(fh)]
    assert steps == list(range(1, 30))
    assert not (tmp_path / "out/attempts.json").exists()  # gone with the step checkpoints


# One attempt of the embedded default's shape (232 records, global batch 16) as stock LitGPT runs it: one CSV row per
# iteration (micro batch) up to the last, then its report (10 s of training).
COMPLETE_ENGINE = r'''
import csv, sys
from pathlib import Path

import yaml

cfg = yaml.safe_load(Path(sys.argv[sys.argv.index('--config') + 1]).read_text())
out, iters = Path(cfg["out_dir"]), -(-232 // cfg["train"]["micro_batch_size"])
log = out / "logs/csv/version_0"
log.mkdir(parents=True, exist_ok=True)
with open(log / "metrics.csv", "w", newline="") as fh:
    writer = csv.DictWriter(fh, ["loss", "iter", "step", "epoch", "iter_time"])
    writer.writeheader()
    for i in range(1, iters + 1):
        writer.writerow({"loss": 2.0, "iter": i, "step": i, "epoch": 0, "iter_time": 0.1})
(out / "final").mkdir()
(out / "final/lit_model.pth").write_bytes(b"weights")
print("| Token Counts\n| - Total Tokens (w/ Padding) :  1900\n| - Training Time             :  10.00 s\n"
      "| - Tok/sec                   :  190.00 tok/s")
'''


@pytest.mark.subprocess
@pytest.mark.parametrize(("micro", "steps"), [(8, 14), (16, 15)])
def test_samples_per_second_counts_the_records_the_yaml_names_whatever_the_micro_batch(tmp_path, monkeypatch, micro,
                                                                                        steps):
    """232 records, global batch 16: micro batch 8 runs 29 iterations and 14 steps (steps x batch: 224), micro batch
    16 runs 15 steps, the last of 8 samples (steps x batch: 240); the stage counts the 232 records of the data its
    YAML names for both."""
    summary = stage_run(tmp_path, monkeypatch, COMPLETE_ENGINE, records=232, global_batch=16, micro=micro)()
    assert summary["steps"] == steps and summary["train_records"] == 232 and summary["trained_samples"] == 232
    assert summary["samples_per_s"] == round(232 / 10.0, 3)
