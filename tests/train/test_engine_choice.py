"""Choosing the fine-tune engine and method per experiment: the schema's switches are the fsdp2 engine's own, the
YAML carries them (and the method and float8), the stage starts the right program, and what an engine cannot do
is refused before any job."""

import dataclasses

import pytest
import yaml

from conftest import REPO, SCHEMA
from llmhpc.config import ConfigError, check, load_schema
from llmhpc.train.litgpt import LORA_TARGETS, litgpt_config
from llmhpc.train.registry import ENGINE_KEYS_FROM_FINETUNE, FSDP2, STOCK


def configured(**finetune) -> dict:
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["experiments"] = [{"name": "stock"}, {"name": "fsdp2", "finetune": {"engine": "fsdp2", **finetune}}]
    return check(cfg, load_schema(SCHEMA))


def test_schema_switches_are_the_engines_own_with_its_defaults():
    """engine_options are the engine's switches; method and float8 are finetune keys the YAML writer copies into
    engine: (what the experiment is, not a speed switch), with the engine's own defaults."""
    from llmhpc.train.fsdp2.args import EngineArgs

    finetune = load_schema(SCHEMA)["properties"]["finetune"]["properties"]
    schema = finetune["engine_options"]["properties"]
    engine = {f.name: f.default for f in dataclasses.fields(EngineArgs)}
    switches = {k: v for k, v in engine.items() if k not in ENGINE_KEYS_FROM_FINETUNE}
    assert set(schema) == set(switches)
    assert {k: v["default"] for k, v in schema.items()} == switches
    for key in ENGINE_KEYS_FROM_FINETUNE:
        assert key not in schema
        if key in engine:  # the engine's default is the finetune key's
            assert finetune[key]["default"] == engine[key], key


def test_an_experiment_changes_one_switch_and_keeps_the_others():
    experiments = configured(engine_options={"packing": False})
    options = experiments["fsdp2"]["finetune"]["engine_options"]
    assert options["packing"] is False and options["compile"] == "auto"  # the rest keep their defaults
    cfg = litgpt_config(experiments["fsdp2"]["finetune"], "ckpt", "data", "out")
    assert cfg["engine"] == {**options, "method": "full", "float8": False}
    assert "engine" not in litgpt_config(experiments["stock"]["finetune"], "ckpt", "data", "out")


def test_each_engine_has_its_command():
    assert STOCK.command("full", "x.yaml")[1:] == ["-m", "llmhpc.train.stock_run", "finetune_full", "--config", "x.yaml"]
    assert FSDP2.command("full", "x.yaml", ["srun"])[0] == "srun"
    assert FSDP2.command("full", "x.yaml")[1:] == ["-m", "llmhpc.train.fsdp2", "--config", "x.yaml"]


@pytest.mark.parametrize("method", ["lora", "dora", "qlora"])
def test_every_lora_method_runs_on_fsdp2_with_finetune_lora_keys(method):
    experiments = configured(method=method, lora_r=16, lora_targets=["query", "value", "mlp"], float8=method != "qlora")
    cfg = litgpt_config(experiments["fsdp2"]["finetune"], "ckpt", "data", "out")
    assert (cfg["lora_r"], cfg["lora_alpha"], cfg["lora_dropout"]) == (16, 16, 0.05)
    assert {t for t in LORA_TARGETS if cfg[f"lora_{t}"]} == {"query", "value", "mlp"}
    assert cfg["resume"] == "auto"  # finetune_lora's layout has none, but the fsdp2 engine resumes adapter runs
    assert (cfg["engine"]["method"], cfg["engine"]["float8"]) == (method, method != "qlora")
    assert cfg["engine"]["packing"] is True  # the switches travel beside them


def test_stock_lora_keeps_its_yaml_and_full_has_no_lora_keys():
    experiments = configured()
    stock = litgpt_config(experiments["stock"]["finetune"], "ckpt", "data", "out")
    assert "lora_r" not in stock and "engine" not in stock and stock["resume"] == "auto"
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["experiments"] = [{"name": "lora", "finetune": {"method": "lora"}}]
    lora = litgpt_config(check(cfg, load_schema(SCHEMA))["lora"]["finetune"], "ckpt", "data", "out")
    assert lora["lora_r"] == 8 and "engine" not in lora and "resume" not in lora
    assert STOCK.command("lora", "x.yaml")[3] == "finetune_lora"  # stock merges the adapters into final/lit_model.pth


@pytest.mark.parametrize(("finetune", "refusal"), [
    ({"method": "dora"}, r"method 'dora' needs engine fsdp2: stock litgpt 0\.5\.x has no DoRA"),
    ({"method": "qlora"}, r"method 'qlora' needs engine fsdp2: .*refuses more than one GPU"),
    ({"float8": True}, r"float8 needs engine fsdp2: stock litgpt 0\.5\.x has no FP8"),
])
def test_what_stock_litgpt_lacks_is_refused_naming_the_engine(finetune, refusal):
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["experiments"] = [{"name": "stock", "finetune": finetune}]
    with pytest.raises(ConfigError, match=r"experiments\[0\]\.finetune' \(experiment 'stock'\): " + refusal):
        check(cfg, load_schema(SCHEMA))


def test_float8_with_qlora_is_refused():
    with pytest.raises(ConfigError, match=r"float8 with method qlora: QLoRA's base weights are 4-bit NF4"):
        configured(method="qlora", float8=True)


@pytest.mark.parametrize("targets", [["query", "projection", "mlp"], ["key", "value", "projection", "mlp", "head"]])
def test_float8_with_every_block_layer_adapted_is_refused(targets):
    with pytest.raises(ConfigError, match=r"float8 with lora_targets .*these targets leave none, so float8 would"
                                          r" change nothing"):
        configured(method="dora", float8=True, lora_targets=targets)


def test_float8_beside_adapters_on_some_layers_is_accepted():
    configured(method="dora", float8=True, lora_targets=["query", "value"])  # the ISC25 preset's dora-fp8
    configured(method="lora", float8=True, lora_targets=["projection", "mlp"])  # qkv stays without adapters


def test_static_compile_shapes_without_packing_is_refused_before_any_job():
    with pytest.raises(ConfigError, match=r"compile_shapes static with packing false: an unpacked run has a shape"):
        configured(engine_options={"compile_shapes": "static", "packing": False})
    configured(engine_options={"compile_shapes": "static"})  # packed: a few shapes, compiled in the warm-up
    configured(engine_options={"packing": False})  # auto: shape-generic when unpacked


def test_an_adapter_method_without_targets_is_refused():
    with pytest.raises(ConfigError, match=r"method dora with lora_targets \[\]: no weight gets an adapter"):
        configured(method="dora", lora_targets=[])
