"""The fsdp2 engine killed mid-run (SIGKILL once a step checkpoint is whole) and rerun with `resume: auto` ends
with the weights of an uninterrupted run, bit for bit (one CPU process, fp32, no compile); a half-written
checkpoint is passed over, and one made with other training settings is not resumed; SIGTERM saves first."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import fsdp2_tiny
import pytest
import torch
import yaml

pytestmark = pytest.mark.litgpt

REPO_SRC = fsdp2_tiny.Path(__file__).resolve().parents[2] / "src"
ENV = dict(os.environ, PYTHONPATH=f"{REPO_SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1",
           JSONARGPARSE_DEPRECATION_WARNINGS="off", PYTHONUNBUFFERED="1")


def resumable(root, out: str, save_interval: int = 2, lr: float = 0.01, **kwargs):
    """fsdp2_tiny's YAML with resume: auto and step checkpoints every save_interval steps."""
    path = fsdp2_tiny.config(root, out, engine={"compile": False}, **kwargs)
    cfg = yaml.safe_load(path.read_text())
    cfg["resume"], cfg["train"]["save_interval"] = "auto", save_interval
    cfg["optimizer"]["init_args"]["lr"] = lr
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def engine(config) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llmhpc.train.fsdp2", "--config", str(config)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def rerun_here(config, capsys) -> str:
    """The rerun after the kill, in this process (the engine's imports are paid once, not once more per rerun; the
    runs that are killed are programs of their own): what it printed."""
    from llmhpc.train.fsdp2.engine import setup

    capsys.readouterr()
    setup(["--config", str(config)])
    return capsys.readouterr().out


def weights(out_dir) -> dict:
    return torch.load(out_dir / "final/lit_model.pth", weights_only=True)["model"]


def last_losses(out_dir) -> dict[int, float]:
    """{iteration: loss} of the newest CSV log (a resumed run logs to a new version)."""
    newest = sorted((out_dir / "logs/csv").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    with open(newest / "metrics.csv") as fh:
        return {int(float(r["step"])): float(r["loss"]) for r in csv.DictReader(fh) if r.get("loss")}


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = fsdp2_tiny.make(tmp_path_factory.mktemp("resume"), n=192)  # 24 steps of 8 samples, 4 micro batches
    from llmhpc.train.fsdp2.engine import setup

    setup(["--config", str(resumable(root, "whole"))])  # the uninterrupted reference, in this process
    return root


def test_killed_run_resumes_to_the_uninterrupted_weights(kit, capsys):
    config = resumable(kit, "killed")
    out = kit / "killed"
    fsdp2_tiny.kill_once_whole(engine(config), out / "step-000004/resume.json")
    whole = sorted(p.name for p in out.glob("step-*") if (p / "resume.json").exists())
    assert "step-000004" in whole and not (out / "final").exists()
    newest = out / whole[-1]
    (newest / "resume.json").unlink()  # as if the kill had come during this save: half-written
    text = rerun_here(config, capsys)
    start = int(whole[-2].split("-")[1])
    assert f"Resuming training from {out / whole[-2]} (step {start})" in text
    reference, resumed = weights(kit / "whole"), weights(out)
    assert reference.keys() == resumed.keys()
    for name in reference:
        assert torch.equal(reference[name], resumed[name]), name
    losses, again = last_losses(kit / "whole"), last_losses(out)
    assert min(again) == (start + 1) * 4 and again == {i: losses[i] for i in again}  # logged by micro batch


def test_other_training_settings_are_not_resumed(kit):
    config = resumable(kit, "changed", save_interval=8)
    out = kit / "changed"
    (out / "step-000008").mkdir(parents=True)
    for src in (kit / "whole").glob("step-000008/*"):  # a whole checkpoint of the reference run (lr 0.01)
        (out / "step-000008" / src.name).write_bytes(src.read_bytes())
    from llmhpc.train.fsdp2 import args, step_checkpoint
    from llmhpc.train.fsdp2.distributed import World

    assert step_checkpoint.find(args.load(config), World()) == out / "step-000008"  # save_interval is not a training setting
    changed = args.load(resumable(kit, "changed", save_interval=8, lr=0.02))
    assert step_checkpoint.find(changed, World()) is None


@pytest.mark.distributed
def test_two_ranks_resume_their_sharded_checkpoint_and_one_process_can_too(tmp_path):
    """FSDP2 full sharding on 2 gloo ranks: each rank saves its shards; a rerun after the newest save was cut short
    resumes from the one before and ends with the uninterrupted run's weights; one plain process loads the same
    sharded folder (resharded by torch.distributed.checkpoint) and ends with them too, up to the order of sums."""
    import shutil

    root = fsdp2_tiny.make(tmp_path, n=32)  # 8 steps of 4 samples
    two = resumable(root, "two", gbs=4, mbs=2, max_seq_length=128, devices=2)
    cfg = yaml.safe_load(two.read_text())
    cfg["engine"]["sharding"] = "full"
    two.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = root / "two"
    for attempt in ("uninterrupted", "resumed"):
        proc = engine(two)  # devices: 2 from a plain process: it starts torchrun itself
        text, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, text[-4000:]
        assert "2 process(es) via torchrun" in text
        if attempt == "uninterrupted":
            assert not any(out.glob("step-000008"))  # no step checkpoint at the last step: final follows
            reference = weights(out)
            shutil.rmtree(out / "final")
            shutil.rmtree(out / "step-000006")
            (out / "step-000004/resume.json").unlink()  # cut short
    assert f"Resuming training from {out / 'step-000002'} (step 2)" in text
    for name, tensor in weights(out).items():
        assert torch.equal(reference[name], tensor), name

    one = resumable(root, "one", gbs=4, mbs=2, max_seq_length=128)
    cfg = yaml.safe_load(one.read_text())
    cfg["resume"] = str(out / "step-000002")  # a folder by name: resumed whatever its settings
    one.write_text(yaml.safe_dump(cfg, sort_keys=False))
    from llmhpc.train.fsdp2.engine import setup

    setup(["--config", str(one)])
    for name, tensor in weights(root / "one").items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-4, atol=1e-5)


def test_the_scheduler_s_warning_saves_at_the_end_of_the_step_and_the_rerun_resumes(kit, capsys):
    """SIGTERM (PBS Pro and Slurm before their SIGKILL): the run saves after the step it is in (no save_interval
    falls in the run), exits 143 and the rerun resumes from that step to the uninterrupted weights."""
    config = resumable(kit, "warned", save_interval=1000)
    out = kit / "warned"
    proc = engine(config)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Epoch 1 | iter 8 step 2 |"):  # training is under way
            proc.send_signal(signal.SIGTERM)
            break
    text = "".join(seen) + proc.communicate(timeout=300)[0]
    assert proc.returncode == 143, text[-3000:]
    (saved,) = [f for f in out.glob("step-*") if (f / "resume.json").exists()]
    step = int(saved.name.split("-")[1])
    assert f"Stopped after step {step} on the scheduler's signal" in text and 2 < step < 24
    rerun = rerun_here(config, capsys)
    assert f"Resuming training from {saved} (step {step})" in rerun, rerun[-3000:]
    reference = weights(kit / "whole")
    for name, tensor in weights(out).items():
        assert torch.equal(reference[name], tensor), name


def test_a_lora_run_resumes_from_its_adapters_only(tmp_path):
    """method lora: the step checkpoint holds the adapters and their optimizer state (the frozen base is
    checkpoint_dir's); a rerun from it ends with the uninterrupted run's weights."""
    import shutil

    from llmhpc.train.fsdp2.engine import setup

    root = fsdp2_tiny.make(tmp_path, n=32)  # 8 steps of 4 samples

    def lora(out):
        path = resumable(root, out, save_interval=3, gbs=4, mbs=2)
        cfg = yaml.safe_load(path.read_text())
        cfg["engine"]["method"] = "lora"
        cfg.update(lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_query=True, lora_value=True, lora_mlp=True)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    for name in ("whole", "cut"):
        setup(["--config", str(lora(name))])
    cut = root / "cut"
    saved = {p.name for p in (cut / "step-000003").iterdir()}
    assert saved == {"__0_0.distcp", "extra.pt", "resume.json", ".metadata"}
    import torch.distributed.checkpoint as dcp

    keys = dcp.FileSystemReader(cut / "step-000003").read_metadata().state_dict_metadata
    model_keys = [k for k in keys if k.startswith("model.")]
    assert model_keys and all(k.endswith(("lora_A", "lora_B")) for k in model_keys), model_keys
    shutil.rmtree(cut / "final")
    shutil.rmtree(cut / "step-000006")
    setup(["--config", str(lora("cut"))])
    reference = weights(root / "whole")
    for name, tensor in weights(cut).items():
        assert torch.equal(reference[name], tensor), name


def test_a_ctrl_c_saves_a_step_checkpoint_and_the_stage_s_rerun_resumes_and_scores_both_attempts(kit):
    """SIGINT to the stage's process group (a Ctrl-C in the terminal: stage and engine get it; the stage hands a
    SIGTERM on too): the engine saves after the step it is in and exits, the stage fails saying the rerun resumes; the
    stage's rerun resumes from that step to the uninterrupted weights, its metrics.csv runs from step 1 and its
    summary counts both attempts."""
    import csv
    import time

    config = resumable(kit, "ctrl_c", save_interval=1000)
    out = kit / "ctrl_c"
    settings = {"method": "full", "engine": "fsdp2", "precision": "32-true", "devices": 1, "num_nodes": 1,
                "global_batch_size": 8, "micro_batch_size": 2}
    paths = [str(config), str(kit / "ckpt"), str(out), str(kit / "ctrl_c.stdout"), str(kit / "ctrl_c.metrics.csv"),
             str(kit / "ctrl_c.summary.json")]
    code = (f"from llmhpc.stages.finetune import run_stage; run_stage(*{paths!r}, {settings!r}, None, 1)")
    stage = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while "Epoch 1 | iter 8 step 2 |" not in (kit / "ctrl_c.stdout").read_text() if (kit / "ctrl_c.stdout").exists() else True:
        assert stage.poll() is None and time.monotonic() < deadline, stage.communicate()[0][-3000:]
        time.sleep(0.05)
    os.killpg(stage.pid, signal.SIGINT)
    t0 = time.monotonic()
    text = stage.communicate(timeout=120)[0]
    assert stage.returncode != 0 and time.monotonic() - t0 < 60, text[-3000:]
    (saved,) = [f for f in out.glob("step-*") if (f / "resume.json").exists()]
    step = int(saved.name.split("-")[1])
    assert f"on SIGINT ({saved.name} saved, the rerun resumes from it" in text, text[-3000:]
    assert "on an interrupt (SIGINT)" in (kit / "ctrl_c.stdout").read_text()
    from llmhpc.stages.finetune import run_stage

    summary = run_stage(*paths, settings, None, 1, log=lambda m: None)
    assert summary["resumed_from_step"] == step and summary["attempts"] == 2 and summary["steps"] == 24
    assert summary["training_time_s"] > summary["last_attempt_training_time_s"]
    with open(kit / "ctrl_c.metrics.csv") as fh:
        assert [int(float(r["step"])) // 4 for r in csv.DictReader(fh) if r.get("loss")] == list(range(1, 25))
    reference = weights(kit / "whole")
    for name, tensor in weights(out).items():
        assert torch.equal(reference[name], tensor), name
