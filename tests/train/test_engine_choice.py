"""Choosing the fine-tune engine per experiment: the schema's switches are the fsdp2 engine's own, the YAML carries
them, the stage starts the right program, and what the engine cannot do is refused before any job."""

import dataclasses

import pytest
import yaml

from conftest import REPO, SCHEMA
from llmhpc.config import ConfigError, check, load_schema
from llmhpc.train.litgpt import command, litgpt_config


def configured(**finetune) -> dict:
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["experiments"] = [{"name": "stock"}, {"name": "fast", "finetune": {"engine": "fsdp2", **finetune}}]
    return check(cfg, load_schema(SCHEMA))


def test_schema_switches_are_the_engines_own_with_its_defaults():
    from llmhpc.train.fast.args import EngineArgs

    schema = load_schema(SCHEMA)["properties"]["finetune"]["properties"]["engine_options"]["properties"]
    engine = {f.name: f.default for f in dataclasses.fields(EngineArgs)}
    assert set(schema) == set(engine)
    assert {k: v["default"] for k, v in schema.items()} == engine


def test_an_experiment_changes_one_switch_and_keeps_the_others():
    experiments = configured(engine_options={"packing": False})
    options = experiments["fast"]["finetune"]["engine_options"]
    assert options["packing"] is False and options["compile"] is True  # the rest keep their defaults
    cfg = litgpt_config(experiments["fast"]["finetune"], "ckpt", "data", "out")
    assert cfg["engine"] == options
    assert "engine" not in litgpt_config(experiments["stock"]["finetune"], "ckpt", "data", "out")


def test_each_engine_has_its_command():
    assert command("full", "x.yaml")[1:] == ["-m", "litgpt", "finetune_full", "--config", "x.yaml"]
    assert command("full", "x.yaml", ["srun"], engine="fsdp2")[0] == "srun"
    assert command("full", "x.yaml", engine="fsdp2")[1:] == ["-m", "llmhpc.train.fast", "--config", "x.yaml"]


def test_lora_on_the_fsdp2_engine_is_refused_before_any_job():
    with pytest.raises(ConfigError, match=r"engine fsdp2 runs full fine-tunes only \(method 'lora'\)"):
        configured(method="lora")
