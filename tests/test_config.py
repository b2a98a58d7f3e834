"""Config refusals: every mistake names its key and what was expected, before any job is built."""

import copy
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, SCHEMA, default_config, snakemake
from llmhpc.config import ConfigError, check, load_schema
from llmhpc.settings import FinetuneSettings


def batch_arithmetic(ft: dict) -> str | None:
    return FinetuneSettings.from_dict(ft).batch_problem()

SCHEMA_DICT = load_schema(SCHEMA)


def refused(cfg) -> str:
    with pytest.raises(ConfigError) as err:
        check(cfg, SCHEMA_DICT)
    return str(err.value)


def test_default_config_is_accepted_and_defaults_filled():
    cfg = default_config()
    experiments = check(cfg, SCHEMA_DICT)
    assert list(experiments) == ["baseline", "mbs16"]
    assert experiments["mbs16"]["finetune"]["micro_batch_size"] == 16
    assert experiments["baseline"]["finetune"]["micro_batch_size"] == cfg["finetune"]["micro_batch_size"]
    assert cfg["finetune"]["weight_decay"] == 0.0  # filled from the schema's default
    assert cfg["evaluate"]["precision"] == "32-true"


def test_empty_config_gets_every_default():
    cfg = {}
    experiments = check(cfg, SCHEMA_DICT)
    assert list(experiments) == ["baseline"]
    assert cfg["model"]["source"] == "tiny"


def _walk(schema, path="config"):
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}.{key}", sub
        yield from _walk(sub, f"{path}.{key}")
    if "items" in schema:
        yield from _walk(schema["items"], path + "[]")


@pytest.mark.unit
def test_the_schema_reads_the_same_through_libyaml_as_through_pure_python():
    assert SCHEMA_DICT == yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))


def test_every_schema_key_has_description_and_default():
    missing = [p for p, sub in _walk(SCHEMA_DICT) if "description" not in sub
               or ("default" not in sub and not p.endswith("[].name"))]
    assert missing == []


def test_unknown_key_is_named_with_a_suggestion():
    cfg = default_config()
    cfg["finetune"]["micro_batch_sise"] = 4
    msg = refused(cfg)
    assert "'finetune.micro_batch_sise': unknown key (did you mean 'micro_batch_size'?)" in msg


def test_fp8_is_pointed_to_float8():
    cfg = default_config()
    cfg["finetune"]["fp8"] = True
    assert "'finetune.fp8': unknown key (did you mean 'float8'?)" in refused(cfg)


def test_bad_value_names_key_expected_and_found():
    cfg = default_config()
    cfg["finetune"]["precision"] = "bf16"
    cfg["finetune"]["epochs"] = 0
    msg = refused(cfg)
    assert "'finetune.precision': expected one of 'auto', '32-true', '16-mixed'" in msg
    assert "got 'bf16'" in msg
    assert "'finetune.epochs': expected a number >= 1, got 0" in msg


def test_experiment_override_errors_name_the_experiment():
    cfg = default_config()
    cfg["experiments"][1]["finetune"] = {"micro_batch_size": "four", "lr": 1}
    msg = refused(cfg)
    assert "'experiments[1].finetune.micro_batch_size': expected a value of type integer, got 'four'" in msg
    assert "'experiments[1].finetune.lr': unknown key" in msg


def test_experiment_names_unique_and_base_reserved():
    cfg = default_config()
    cfg["experiments"].append({"name": "baseline"})
    cfg["experiments"].append({"name": "base"})
    msg = refused(cfg)
    assert "'experiments[2].name': 'baseline' is used twice" in msg
    assert "'experiments[3].name': 'base' is reserved" in msg


def test_organisers_batch_on_litgpt_05_is_refused_with_the_fix():
    # The APAC 2024 command: global 128, micro 32 on 2 nodes x 4 GPUs -> 16 per rank < 32: litgpt 0.5.13 asserts.
    ft = {"global_batch_size": 128, "micro_batch_size": 32, "devices": 4, "num_nodes": 2}
    msg = batch_arithmetic(ft)
    assert "16 sample(s) per rank, fewer than micro_batch_size 32" in msg
    assert "at least 256" in msg and "micro_batch_size to 16" in msg
    cfg = default_config()
    cfg["experiments"][1]["finetune"] = ft
    msg = refused(cfg)
    assert "config 'experiments[1].finetune' (experiment 'mbs16')" in msg


def test_batch_arithmetic_accepts_stock_and_refuses_uneven():
    assert batch_arithmetic({"global_batch_size": 64, "micro_batch_size": 4, "devices": 4, "num_nodes": 1}) is None
    msg = batch_arithmetic({"global_batch_size": 100, "micro_batch_size": 4, "devices": 4, "num_nodes": 2})
    assert "not a multiple" in msg and "every 96 samples" in msg


def test_hf_source_needs_pinned_revision():
    cfg = default_config()
    cfg["model"] = {"source": "hf", "repo_id": "meta-llama/Llama-2-7b-hf", "name": "Llama-2-7b-hf"}
    assert "'model.revision': required when model.source is 'hf'" in refused(cfg)


@pytest.mark.snakemake
def test_snakemake_refuses_bad_config_before_any_job(repo_copy):
    cfg = default_config()
    cfg["finetune"]["global_batch_size"] = 4
    (repo_copy / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(repo_copy, "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config 'finetune' (experiment 'baseline'): global_batch_size 4" in out
    assert not (repo_copy / "results/env").exists()  # nothing ran


def test_warmup_longer_than_max_steps_is_refused():
    cfg = default_config()
    cfg["finetune"]["max_steps"] = 3
    msg = refused(cfg)
    assert "config 'finetune' (experiment 'baseline'): lr_warmup_steps 3 must be below max_steps 3" in msg


@pytest.mark.snakemake
@pytest.mark.parametrize("example", sorted((REPO / "config/examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_accepted(example, repo_copy):
    """Every shipped example config passes the checks as `snakemake --configfile` would apply it."""
    data = yaml.safe_load(example.read_text()).get("data", {}).get("finetune", {})
    if data.get("path") == "bench/data":  # the benchmark's generated set, made as its script makes it
        subprocess.run([sys.executable, "bench/make_alpaca.py", "bench/data"], cwd=repo_copy, check=True,
                       env=dict(os.environ, PYTHONPATH=str(repo_copy / "src")))
    args = ["-n", "--configfile", f"config/examples/{example.name}"]
    float8 = [e["name"] for e in yaml.safe_load(example.read_text()).get("experiments", [])
              if e.get("finetune", {}).get("float8")]
    if float8 and not shutil.which("nvidia-smi"):
        # an FP8 experiment is refused where there is no FP8 GPU, naming it, before any job; on a site that names
        # such a GPU (site.gpu_model, as a cluster profile does) the same config is accepted
        proc = snakemake(repo_copy, *args, check=False)
        assert proc.returncode != 0 and f"experiment '{float8[0]}': finetune.float8 true needs" in proc.stdout + proc.stderr
        (repo_copy / "h200.yaml").write_text("site:\n  gpu_model: H200\n")
        args += ["--configfile", "h200.yaml"]
    proc = snakemake(repo_copy, *args)
    assert "Job stats:" in proc.stdout


@pytest.mark.parametrize("argv, dry", [(["snakemake", "-n"], True), (["snakemake", "--dry-run"], True),
                                       (["snakemake", "-pn", "--cores", "2"], True), (["snakemake", "-c2"], False),
                                       (["snakemake", "--configfile", "n.yaml"], False), (["snakemake"], False)])
def test_dry_runs_are_told_from_the_command_line(argv, dry):
    from llmhpc.snakefile_helpers import is_dry_run

    assert is_dry_run(argv) is dry


def _wrong_values(sub: dict) -> list:
    """Values the schema node `sub` refuses, by its type and enum."""
    kinds = sub.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    wrong = []
    if "enum" in sub:
        wrong.append("not-one-of-them")
    if not {"integer", "number"} & set(kinds):
        wrong.append(7)
    if "string" not in kinds:
        wrong.append("seven")
    if "boolean" not in kinds:
        wrong.append(True)
    if "object" in kinds:
        wrong.append({"surely_not_a_key": 1})
    if "minimum" in sub:
        wrong.append(sub["minimum"] - 1)
    return wrong


def _set(cfg: dict, parts: list[str], value) -> bool:
    node = cfg
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return False
    node[parts[-1]] = value
    return True


def _corpus() -> list:
    """Every shipped config (alone and over config/config.yaml), and the default config with each schema key in
    turn set to values its schema refuses."""
    from llmhpc.train.litgpt import deep_merge

    base = default_config()
    shipped = sorted((REPO / "config").glob("*/*.yaml"))
    corpus = [base] + [yaml.safe_load(p.read_text()) for p in shipped]
    corpus += [deep_merge(copy.deepcopy(base), yaml.safe_load(p.read_text())) for p in shipped]
    for path, sub in _walk(SCHEMA_DICT):
        if "[]" in path:
            continue
        for value in _wrong_values(sub):
            cfg = copy.deepcopy(base)
            if _set(cfg, path.split(".")[1:], value):
                corpus.append(cfg)
    corpus.append({**copy.deepcopy(base), "run_name": "white space"})  # pattern
    corpus.append({**copy.deepcopy(base), "experiments": [{"name": "base"}]})  # not const
    return corpus


@pytest.mark.unit
def test_the_fast_verdict_agrees_with_jsonschema_on_every_key():
    import jsonschema

    from llmhpc.config import apply_defaults
    from llmhpc.schema_check import fast_verdict

    validator = jsonschema.Draft202012Validator(SCHEMA_DICT)
    corpus = _corpus()
    verdicts = []
    for cfg in corpus:
        cfg = apply_defaults(cfg, SCHEMA_DICT)
        verdicts.append((fast_verdict(cfg, SCHEMA_DICT), not any(validator.iter_errors(cfg))))
    assert [i for i, (fast, slow) in enumerate(verdicts) if fast != slow] == []
    assert sum(slow for _, slow in verdicts) >= 2 * 10  # every shipped config, alone and merged, is valid
    assert sum(not slow for _, slow in verdicts) > 300  # and hundreds of refusals were compared


@pytest.mark.unit
def test_a_valid_config_is_checked_without_jsonschema_and_a_refusal_still_uses_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # `import jsonschema` now fails
    assert list(check(default_config(), SCHEMA_DICT)) == ["baseline", "mbs16"]
    cfg = default_config()
    cfg["finetune"]["epochs"] = 0
    with pytest.raises(ImportError):
        check(cfg, SCHEMA_DICT)


@pytest.mark.unit
def test_without_jsonschema_rs_the_same_config_is_accepted_and_the_same_refused(monkeypatch):
    import llmhpc.schema_check

    cfg = default_config()
    cfg["finetune"]["precision"] = "bf16"
    with_rs = refused(copy.deepcopy(cfg))
    monkeypatch.setattr(llmhpc.schema_check, "jsonschema_rs", None)
    assert refused(cfg) == with_rs
    assert list(check(default_config(), SCHEMA_DICT)) == ["baseline", "mbs16"]


@pytest.mark.unit
def test_values_jsonschema_rs_cannot_read_are_judged_by_jsonschema():
    import datetime

    from llmhpc.schema_check import fast_verdict

    cfg = default_config()
    cfg["presentation"]["event"] = datetime.date(2026, 11, 28)  # YAML reads an unquoted 2026-11-28 as a date
    assert fast_verdict(cfg, SCHEMA_DICT) is False
    assert "'presentation.event': expected a value of type string, got datetime.date(2026, 11, 28)" in refused(cfg)


def test_a_typo_inside_finetune_extra_is_refused_at_parse_time_naming_the_key():
    cfg = default_config()
    cfg["finetune"]["extra"] = {"train": {"max_step": 5}, "eval": {"interval": 3}}
    msg = refused(cfg)
    assert "config key 'finetune.extra.train.max_step'" in msg and "did you mean 'max_steps'?" in msg
    assert msg.count("finetune.extra.train.max_step") == 1  # shared by both experiments, said once
    cfg = default_config()
    cfg["experiments"][1]["finetune"]["engine"] = "fsdp2"
    cfg["experiments"][1]["finetune"]["extra"] = {"engine": {"packin": False}, "resum": "auto"}
    msg = refused(cfg)
    assert "config key 'experiments[1].finetune.extra.engine.packin'" in msg and "did you mean 'packing'?" in msg
    assert "'experiments[1].finetune.extra.resum'" in msg and "did you mean 'resume'?" in msg
    cfg = default_config()
    cfg["finetune"]["extra"] = {"engine": {"packing": False}}  # stock litgpt has no engine: section
    assert "config key 'finetune.extra.engine': not a key of litgpt finetune_full" in refused(cfg)
    cfg = default_config()
    cfg["finetune"]["extra"] = {"train": {"max_steps": 3, "lr_warmup_fraction": 0.1}, "data": {"init_args": {"seed": 1}}}
    check(cfg, SCHEMA_DICT)  # LitGPT's own keys pass
