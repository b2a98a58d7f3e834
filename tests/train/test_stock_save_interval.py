"""The stock engine's step-checkpoint interval in a scheduler job: min(train.save_interval, walltime.plan's) from the
step time an earlier attempt measured (litgpt's metrics.csv) or from the FLOPs estimate; the configured one in a
local run; the job's YAML differs from the configured one only in train.save_interval, which leaves the resume
settings as they are. One real stock run through the stage saves at the derived interval."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import yaml

from llmhpc.settings import FinetuneSettings
from llmhpc.stages import finetune
from llmhpc.train import resume, stock_save_interval, walltime

# litgpt 0.5's CSV rows as a real `litgpt finetune_full` on the tiny model writes them (its "step" column holds the
# iteration: Lightning's CSV logger overwrites it); 4 micro batches a step
HEADER = "epoch,iter,iter_time,learning_rate,loss,step,tokens,total_tokens"
ROWS = ["0,1,0.900,0.0,6.25,1,137,137", "0,2,0.011,0.0,6.24,2,243,243", "0,3,0.012,0.0,6.25,3,353,353",
        "0,4,0.016,0.005,6.24,4,501,501", "0,5,0.50,0.005,6.2,5,600,600", "0,6,0.52,0.005,6.2,6,700,700",
        "0,7,0.48,0.005,6.2,7,800,800"]
# Llama 2 7B as litgpt's model_config.yaml describes it (6.74 B parameters)
LLAMA2_7B = {"n_layer": 32, "n_embd": 4096, "n_head": 32, "n_query_groups": 32, "head_size": 128,
             "intermediate_size": 11008, "padded_vocab_size": 32000, "mlp_class_name": "LLaMAMLP"}
FULL_8XH100 = FinetuneSettings.from_dict({"method": "full", "devices": 8, "num_nodes": 1, "global_batch_size": 128,
                                          "micro_batch_size": 4, "max_seq_length": 512})


def earlier_attempt(out_dir, rows=ROWS):
    csv_dir = out_dir / "logs/csv/version_0"
    csv_dir.mkdir(parents=True)
    (csv_dir / "metrics.csv").write_text("\n".join([HEADER, *rows]) + "\n")


def test_step_time_measured_by_an_earlier_attempt(tmp_path):
    earlier_attempt(tmp_path)
    # rows after the first optimizer step (iterations 5-7): median 0.50 s a micro batch, x 4 a step
    assert stock_save_interval.measured_step_s(tmp_path, 4) == pytest.approx(2.0)
    (tmp_path / resume.SETTINGS_FILE).write_text(json.dumps({"yaml": {"seed": 1}}))
    assert stock_save_interval.measured_step_s(tmp_path, 4, {"yaml": {"seed": 2}}) is None  # trained with other settings
    assert stock_save_interval.measured_step_s(tmp_path, 4, {"yaml": {"seed": 1}}) == pytest.approx(2.0)
    assert stock_save_interval.measured_step_s(tmp_path / "none", 4) is None


def test_interval_from_the_measured_step_time():
    got = stock_save_interval.choose(20000, (1000.0, 8200.0), 1000.0, 0.1, measured_s=20.0, estimate_s=1.0)
    assert (got.save_interval, got.source, got.step_s) == (36, "measured", 20.0)  # 720 s / 20 s a step
    assert got.line().startswith("Step checkpoints every 36 steps (sooner than train.save_interval 20000: 10% of"
                                 " the 7200 s walltime at 20 s a step, measured")
    kept = stock_save_interval.choose(10, (1000.0, 8200.0), 1000.0, 0.1, measured_s=20.0, estimate_s=None)
    assert (kept.save_interval, kept.source) == (10, "measured")  # the configured one is sooner already


def test_interval_from_the_flops_estimate():
    assert stock_save_interval.parameters(LLAMA2_7B) == 6_738_415_616 - 266_240  # litgpt's count less the norms
    step_s = stock_save_interval.estimated_step_s(LLAMA2_7B, FULL_8XH100, peak=790.0)
    # (6 N + 12 L d T) x 128 x 512 tokens / 8 GPUs / (790 TFLOP/s x 5 %)
    assert step_s == pytest.approx((6 * 6_738_149_376 + 12 * 32 * 4096 * 512) * 65536 / 8 / (790e12 * 0.05))
    assert stock_save_interval.estimated_step_s(LLAMA2_7B, FULL_8XH100, peak=None) is None  # no peak known: no estimate
    got = stock_save_interval.choose(20000, (0.0, 3600.0), 0.0, 0.1, measured_s=None, estimate_s=step_s, gpu="NVIDIA H100")
    assert got.save_interval == int(360 // step_s) and got.source == "estimate"
    assert "NVIDIA H100's peak at 5% MFU" in got.why
    unknown = stock_save_interval.choose(20000, (0.0, 3600.0), 0.0, 0.1, measured_s=None, estimate_s=None, gpu="cpu")
    assert (unknown.save_interval, unknown.source) == (20000, "configured")


def test_a_local_run_keeps_the_configured_interval(tmp_path, monkeypatch):
    for name in ("SLURM_JOB_END_TIME", "SLURM_JOB_ID", "PBS_JOBID", "PBS_WALLTIME"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "litgpt.yaml"
    config.write_text(yaml.safe_dump({"out_dir": str(tmp_path / "out"), "train": {"save_interval": 20000}}))
    lines = []
    full = FinetuneSettings.from_dict({"method": "full"})
    run_config, record = finetune.stock_interval(config, tmp_path, full, 120, None, 2.0, lines.append)
    assert run_config == config and not (tmp_path / stock_save_interval.JOB_YAML).exists()
    assert record["save_interval"] == 20000 and record["save_interval_source"] == "configured"
    assert lines == ["Step checkpoints every 20000 steps (train.save_interval; no scheduler job: its end is unknown)"]


def test_the_job_yaml_has_the_derived_interval_and_the_same_resume_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("PBS_JOBID", "7.pbs")
    monkeypatch.setenv("PBS_WALLTIME", "7200")
    monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt/model_config.yaml").write_text(yaml.safe_dump(LLAMA2_7B))
    monkeypatch.setattr(finetune, "gpu_name", lambda: "NVIDIA H100 80GB HBM3")
    config = tmp_path / "litgpt.yaml"
    config.write_text("# the rule's header\n" + yaml.safe_dump(
        {"checkpoint_dir": str(tmp_path / "ckpt"), "out_dir": str(tmp_path / "out"), "resume": "auto",
         "train": {"save_interval": 20000, "log_interval": 1, "global_batch_size": 128}}))
    before = config.read_text()
    lines = []
    bf16 = dataclasses.replace(FULL_8XH100, precision="bf16-true")
    run_config, record = finetune.stock_interval(config, tmp_path / "ckpt", bf16, None, None, None, lines.append)
    expected = int(720 // stock_save_interval.estimated_step_s(LLAMA2_7B, FULL_8XH100, 790.0))
    assert run_config == tmp_path / stock_save_interval.JOB_YAML and config.read_text() == before  # the rule's file stays
    job = resume.read_yaml(run_config)
    assert job["train"]["save_interval"] == expected == record["save_interval"]
    assert record["save_interval_source"] == "estimate" and record["save_interval_configured"] == 20000
    assert lines[0].startswith(f"Step checkpoints every {expected} steps (sooner than train.save_interval 20000")
    assert resume.training_settings(job) == resume.training_settings(resume.read_yaml(config))  # resumes the same


@pytest.mark.litgpt
def test_a_stock_run_in_a_scheduler_job_saves_at_the_derived_interval(tmp_path, monkeypatch):
    """The presets' huge train.save_interval, an earlier attempt that measured 2 s a step, a 60 s PBS walltime: the
    stage runs litgpt with save_interval 3 (10 % of 60 s at 2 s a step) and litgpt saves after steps 3, 6, 9, 12."""
    import fsdp2_tiny

    root = fsdp2_tiny.make(tmp_path, n=96)  # 12 steps of 8 samples, 4 micro batches each
    config = fsdp2_tiny.config(root, "out")
    cfg = yaml.safe_load(config.read_text())
    cfg["resume"] = "auto"  # save_interval 1000000 stays
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    earlier_attempt(root / "out")
    monkeypatch.setenv("PBS_JOBID", "7.pbs")
    monkeypatch.setenv("PBS_WALLTIME", "60")
    for name in ("SLURM_JOB_END_TIME", walltime.START, walltime.END, walltime.SHARE):
        monkeypatch.setenv(name, "")  # undone after the test: the stage sets the engine's variables
        monkeypatch.delenv(name)
    settings = {"method": "full", "engine": "litgpt", "precision": "32-true", "devices": 1, "num_nodes": 1,
                "global_batch_size": 8, "micro_batch_size": 2, "max_seq_length": 96, "resume": "auto"}
    lines = []
    summary = finetune.run_stage(config, root / "ckpt", root / "out", tmp_path / "ft.stdout", tmp_path / "m.csv",
                                 tmp_path / "s.json", settings, None, 1, log=lines.append)
    assert summary["save_interval"] == 3 and summary["save_interval_source"] == "measured"
    assert any(line.startswith("Step checkpoints every 3 steps (sooner than train.save_interval 1000000: 10% of the"
                               " 60 s walltime at 2 s a step") for line in lines)
    assert summary["command"].endswith(f"--config {tmp_path / stock_save_interval.JOB_YAML}")
    text = (tmp_path / "ft.stdout").read_text()
    saved = sorted({int(p) for p in re.findall(r"step-(\d{6})", text)})
    assert saved == [3, 6, 9, 12]
