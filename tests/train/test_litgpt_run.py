"""The finetune stage for real on the tiny model: stock LoRA and DoRA on the fsdp2 engine (the e2e run covers full
fine-tuning), then scored."""

import json

import pytest

from conftest import SCHEMA, default_config
from llmhpc.config import check, load_schema
from llmhpc.eval.reference import evaluate
from llmhpc.sources.embedded import shipped_dir
from llmhpc.sources.tiny import write_tiny_model
from llmhpc.stages import finetune
from llmhpc.stages.data import prepare_finetune
from llmhpc.train import litgpt

pytestmark = [pytest.mark.litgpt]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The embedded default's tiny model in LitGPT's format, by litgpt's converter called in this process (the
    convert stage, which runs it as a program and loads the result back, has its own tests in test_weights.py)."""
    from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

    lit = tmp_path_factory.mktemp("tiny") / "lit"
    write_tiny_model(lit, "pythia-14m", 1024, 42)
    convert_hf_checkpoint(lit, model_name="pythia-14m")
    return lit


SCORED = 24  # of the 192 embedded HellaSwag items: that the merged model scores at all, not its accuracy, is the point


def some_items(tmp_path):
    """The first SCORED items of the embedded eval file, as a file of their own."""
    lines = (shipped_dir() / "hellaswag.jsonl").read_text().splitlines()
    assert len(lines) > SCORED
    path = tmp_path / "hellaswag.jsonl"
    path.write_text("\n".join(lines[:SCORED]) + "\n")
    return path


def assert_phases(summary: dict, warmup: bool) -> None:
    """The job's time breakdown: every phase measured, the training loop the training time, and the phases
    adding up to the job's wall."""
    names = ("startup", "load", "warmup", "work", "save", "exit")
    phases = {name: summary[f"phase_{name}_s"] for name in names}
    assert (phases["warmup"] is not None) == warmup
    assert all(v >= 0 for k, v in phases.items() if k != "warmup" or warmup), phases
    assert phases["startup"] > 0.5  # an interpreter and torch's import at least
    assert phases["work"] == pytest.approx(summary["training_time_s"], abs=0.01)
    # the job's wall: the stage's and what the job's process did before it (here the test process's own age)
    assert summary["job_wall_s"] > summary["stage_wall_s"]
    assert sum(v or 0.0 for v in phases.values()) == pytest.approx(summary["job_wall_s"], abs=0.01)


def test_lora_finetune_runs_and_its_model_scores(checkpoint, tmp_path):
    cfg = default_config()
    cfg["experiments"] = [{"name": "lora", "finetune": {"method": "lora", "max_steps": 3, "lr_warmup_steps": 1,
                                                         "lora_r": 4}}]
    ft = check(cfg, load_schema(SCHEMA))["lora"]["finetune"]
    data = tmp_path / "data"
    prepare_finetune({"source": "embedded"}, data, shipped_dir(), log=lambda *a: None)
    yaml_path = tmp_path / "litgpt.yaml"
    out = tmp_path / "out"
    litgpt.write_litgpt_config(yaml_path, ft, checkpoint, data, out, experiment="lora")
    summary = finetune.run_stage(yaml_path, checkpoint, out, tmp_path / "ft.stdout", tmp_path / "metrics.csv",
                                 tmp_path / "summary.json", ft, None, 2, log=lambda *a: None)
    assert summary["method"] == "lora" and summary["steps"] == 3
    assert_phases(summary, warmup=False)  # stock's warm-up is inside its training time
    assert summary["trainable_parameters"] < 14_067_712 / 10  # only the adapters train
    assert json.loads((tmp_path / "summary.json").read_text())["exit_code"] == 0
    # litgpt merges the adapters into out/final/lit_model.pth, which the evaluate stage scores like any checkpoint
    metrics = evaluate(out / "final", some_items(tmp_path), tmp_path / "p.jsonl", tmp_path / "m.json",
                       precision="32-true", batch_size=16, bos="false", device="cpu", log=lambda *a: None)
    assert metrics["items"] == SCORED


def test_an_adapter_method_on_the_fsdp2_engine_through_the_stage(checkpoint, tmp_path):
    """The YAML the workflow writes for the fsdp2 engine (finetune_lora's keys, engine.method) is the one the engine
    reads: the stage runs it, the summary has samples/s and the attention backend the engine printed, and the
    merged checkpoint scores like any other. (DoRA here; QLoRA's YAML differs only in engine.method, and the
    engine's own tests run it.)"""
    method = "dora"
    cfg = default_config()
    cfg["experiments"] = [{"name": method, "finetune": {"engine": "fsdp2", "method": method, "max_steps": 3,
                                                         "lr_warmup_steps": 1, "lora_r": 4,
                                                         "engine_options": {"compile": False}}}]
    ft = check(cfg, load_schema(SCHEMA))[method]["finetune"]
    data = tmp_path / "data"
    prepare_finetune({"source": "embedded"}, data, shipped_dir(), log=lambda *a: None)
    yaml_path, out = tmp_path / "litgpt.yaml", tmp_path / "out"
    litgpt.write_litgpt_config(yaml_path, ft, checkpoint, data, out, experiment=method)
    summary = finetune.run_stage(yaml_path, checkpoint, out, tmp_path / "ft.stdout", tmp_path / "metrics.csv",
                                 tmp_path / "summary.json", ft, None, 2, log=lambda *a: None)
    assert (summary["method"], summary["engine"], summary["float8"], summary["steps"]) == (method, "fsdp2", False, 3)
    assert summary["attention"] == "sdpa"  # what the engine chose on CPU, read from its settings line
    assert summary["compile_decision"].startswith("eager: on cpu")  # the engine's choice and why, read back
    assert_phases(summary, warmup=True)
    assert 0 < summary["predicted_memory_gb"] < 1  # the engine's estimate for its rows (a 14M model), read back
    assert summary["samples_per_s"] == pytest.approx(3 * ft["global_batch_size"] / summary["training_time_s"], rel=1e-3)
    assert summary["trainable_parameters"] < 14_067_712 / 10  # only the adapters train
    metrics = evaluate(out / "final", some_items(tmp_path), tmp_path / "p.jsonl", tmp_path / "m.json",
                       precision="32-true", batch_size=16, bos="false", device="cpu", log=lambda *a: None)
    assert metrics["items"] == SCORED


def test_failed_finetune_keeps_its_stdout_and_says_why(checkpoint, tmp_path):
    cfg = default_config()
    ft = check(cfg, load_schema(SCHEMA))["baseline"]["finetune"]
    yaml_path = tmp_path / "litgpt.yaml"
    litgpt.write_litgpt_config(yaml_path, ft, checkpoint, tmp_path / "no-such-data", tmp_path / "out", "x")
    with pytest.raises(RuntimeError, match=r"litgpt finetune_full exited with 1; last lines of"):
        finetune.run_stage(yaml_path, checkpoint, tmp_path / "out", tmp_path / "ft.stdout", tmp_path / "m.csv",
                           tmp_path / "s.json", ft, None, 2, log=lambda *a: None)
    assert "no-such-data" in (tmp_path / "ft.stdout").read_text()
