"""Which step checkpoints a rerun resumes from (llmhpc.train.resume): whole ones made with the same training
settings only; half-written ones and those of another YAML are removed, saying why."""

import json

import yaml

from llmhpc.settings import FinetuneSettings
from llmhpc.train import resume


def write_yaml(path, lr=0.01, **extra):
    cfg = {"checkpoint_dir": str(path.parent / "ckpt"), "out_dir": str(path.parent / "out"), "resume": "auto",
           "data": {"class_path": "litgpt.data.JSON", "init_args": {"json_path": str(path.parent / "data"),
                                                                    "num_workers": 4}},
           "train": {"save_interval": 2, "log_interval": 1, "global_batch_size": 4},
           "eval": {"interval": 10}, "optimizer": {"init_args": {"lr": lr}}, **extra}
    path.write_text(yaml.safe_dump(cfg))
    return path


def stock_step(out, step, whole=True):
    folder = out / f"step-{step:06d}"
    folder.mkdir(parents=True)
    (folder / "lit_model.pth").write_bytes(b"weights")
    if whole:
        (folder / "prompt_style.yaml").write_text("class_path: litgpt.prompts.Alpaca\n")
    return folder


def fsdp2_step(out, step, whole=True):
    folder = out / f"step-{step:06d}"
    folder.mkdir(parents=True)
    (folder / "__0_0.distcp").write_bytes(b"shard")
    if whole:
        (folder / "resume.json").write_text(json.dumps({"step": step}))
    return folder


def test_newest_whole_checkpoint_is_chosen_and_a_half_written_one_removed(tmp_path):
    config, out, lines = write_yaml(tmp_path / "litgpt.yaml"), tmp_path / "out", []
    resume.prepare(out, config, lines.append)  # records the settings of the first run
    stock_step(out, 2)
    stock_step(out, 4)
    half = stock_step(out, 6, whole=False)
    fsdp2_half = fsdp2_step(tmp_path / "fsdp2", 4, whole=False)
    assert not resume.is_complete(fsdp2_half) and resume.is_complete(fsdp2_step(tmp_path / "fsdp2", 2))
    assert resume.prepare(out, config, lines.append) == out / "step-000004"
    assert not half.exists() and (out / "step-000002").is_dir()
    assert any("half-written" in line and "step-000006" in line for line in lines)
    assert lines[-1].startswith("resume: from step 4")


def test_a_changed_training_setting_starts_over_and_says_which(tmp_path):
    config, out, lines = write_yaml(tmp_path / "litgpt.yaml"), tmp_path / "out", []
    resume.prepare(out, config, lines.append)
    stock_step(out, 2)
    write_yaml(config, log_interval_unused=1, lr=0.01)  # a new key counts as a change
    assert resume.prepare(out, config, lines.append) is None
    assert any("starting over" in line and "log_interval_unused" in line for line in lines)
    assert resume.step_folders(out) == []
    stock_step(out, 2)
    write_yaml(config, log_interval_unused=1, lr=0.02)
    assert resume.prepare(out, config, lines.append) is None
    assert "optimizer.init_args.lr: 0.01 -> 0.02" in lines[-2]


def test_settings_that_do_not_change_the_weights_keep_the_state(tmp_path):
    config, out = write_yaml(tmp_path / "litgpt.yaml"), tmp_path / "out"
    resume.prepare(out, config, lambda *a: None)
    stock_step(out, 2)
    cfg = yaml.safe_load(config.read_text())
    cfg["train"]["save_interval"], cfg["eval"]["interval"], cfg["data"]["init_args"]["num_workers"] = 5, 3, 0
    config.write_text(yaml.safe_dump(cfg))
    assert resume.prepare(out, config, lambda *a: None) == out / "step-000002"


def test_changed_data_starts_over(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/train.json").write_text("[]")
    config, out, lines = write_yaml(tmp_path / "litgpt.yaml"), tmp_path / "out", []
    resume.prepare(out, config, lines.append)
    stock_step(out, 2)
    (tmp_path / "data/train.json").write_text('[{"instruction": "x", "output": "y"}]')
    assert resume.prepare(out, config, lines.append) is None
    assert "inputs.data.train.json" in lines[-2]


def test_state_without_recorded_settings_is_not_trusted(tmp_path):
    config, out, lines = write_yaml(tmp_path / "litgpt.yaml"), tmp_path / "out", []
    stock_step(out, 2)  # e.g. left by a run of the workflow before it recorded them
    assert resume.prepare(out, config, lines.append) is None
    assert "no resume-settings.json" in lines[0]


def test_pruner_keeps_the_newest_whole_checkpoint_and_the_one_being_written(tmp_path):
    out = tmp_path / "out"
    for step in (2, 4):
        stock_step(out, step)
    writing = stock_step(out, 6, whole=False)
    resume.pruner(out, lambda *a: None)(f"Saving checkpoint to '{writing}'\n")
    assert [f.name for f in resume.step_folders(out)] == ["step-000004", "step-000006"]


def test_stock_lora_cannot_resume_and_says_so(tmp_path):
    config = tmp_path / "litgpt.yaml"
    config.write_text(yaml.safe_dump({"lora_r": 8}))  # finetune_lora's YAML has no resume
    lines = []
    stock_lora = FinetuneSettings.from_dict({"method": "lora", "engine": "litgpt", "resume": "auto"})
    assert not resume.enabled(stock_lora, config, lines.append)
    assert "litgpt finetune_lora (LitGPT 0.5.x) has no resume argument" in lines[0]
    assert not resume.enabled(FinetuneSettings.from_dict({"method": "full", "resume": False}), write_yaml(config), lines.append)
    assert resume.enabled(FinetuneSettings.from_dict({"method": "full", "resume": "auto"}), write_yaml(config), lines.append)


def test_discard_removes_steps_and_settings(tmp_path):
    config, out = write_yaml(tmp_path / "litgpt.yaml"), tmp_path / "out"
    resume.prepare(out, config, lambda *a: None)
    stock_step(out, 2)
    (out / "final").mkdir()
    resume.discard(out)
    assert sorted(p.name for p in out.iterdir()) == ["final"]
