"""The engine registry: its names are the schema's, each entry answers what the stage, the config check and the
preflight ask of it, no other module compares engine names, and the typed settings take their defaults from the
schema alone."""

import dataclasses
import re

import pytest
import yaml

from conftest import REPO, SCHEMA
from llmhpc.settings import FinetuneSettings, schema_defaults
from llmhpc.train.registry import ENGINES, FSDP2, STOCK, of

pytestmark = pytest.mark.unit


def test_the_registry_names_the_schemas_engines():
    schema = yaml.safe_load(open(SCHEMA, encoding="utf-8"))
    finetune = schema["properties"]["finetune"]["properties"]
    assert list(ENGINES) == finetune["engine"]["enum"]
    assert ENGINES["litgpt"] is STOCK and ENGINES["fsdp2"] is FSDP2
    for engine in ENGINES.values():  # every method is run by some engine, and one that cannot says why
        assert set(finetune["method"]["enum"]) >= set(engine.methods)
        assert set(finetune["method"]["enum"]) - set(engine.methods) <= set(engine.lacks)


def test_what_each_engine_can_do():
    dora = FinetuneSettings.from_dict({"method": "dora", "engine": "litgpt"})
    assert STOCK.problem(dora) == ("method 'dora' needs engine fsdp2: stock litgpt 0.5.x has no DoRA;"
                                   " set engine: fsdp2")
    assert FSDP2.problem(dataclasses.replace(dora, engine="fsdp2", float8=True)) is None
    assert STOCK.problem(FinetuneSettings.from_dict({"float8": True})).startswith("float8 needs engine fsdp2:")
    assert of({"engine": "fsdp2"}) is FSDP2 and of({}) is ENGINES[schema_defaults("finetune")["engine"]]
    # its `engine:` section: the switches and what the experiment is; the stock YAML has none
    lora_on_fsdp2 = FinetuneSettings.from_dict({"engine": "fsdp2", "method": "lora", "engine_options": {"packing": False}})
    assert FSDP2.options(lora_on_fsdp2) == {"packing": False, "method": "lora", "float8": False}
    assert STOCK.options(lora_on_fsdp2) == {}
    # a CSV row's iter_time: one optimizer step's for fsdp2 (4 micro batches here), one micro batch's for stock
    assert FSDP2.iter_time_s(2.0, 4) == 0.5 and STOCK.iter_time_s(2.0, 4) == 2.0
    assert STOCK.run_line("lora", "x.yaml") == "litgpt finetune_lora --config x.yaml"
    assert FSDP2.run_line("dora", "x.yaml") == "python -m llmhpc.train.fsdp2 --config x.yaml"


def test_no_other_module_compares_engine_names():
    """An engine's name in a comparison, a membership test or a .get default outside the registry is a decision
    the registry's entry should answer."""
    names = "|".join(ENGINES)
    compared = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)"""
                          rf"""|get\(\s*["']engine["']\s*,""")
    found = []
    for path in [*(REPO / "src").rglob("*.py"), *(REPO / "workflow").rglob("*.py"), *(REPO / "workflow").rglob("*.smk")]:
        if path.name == "registry.py" and path.parent.name == "train":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if compared.search(line.split("#")[0]):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == []


def test_the_settings_take_every_default_from_the_schema():
    defaults = schema_defaults("finetune")
    assert {f.name for f in dataclasses.fields(FinetuneSettings)} == set(defaults)
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(FinetuneSettings))  # none written twice
    built = FinetuneSettings.from_dict({})
    assert built.lora_targets == tuple(defaults["lora_targets"]) and built.micro_batch_size == defaults["micro_batch_size"]
    built.engine_options["x"] = 1  # a default dict is each settings' own, not the schema's
    assert FinetuneSettings.from_dict({}).engine_options == {}
