"""Load, default and check the workflow config before any job is built.

Every refusal is a ConfigError (llmhpc.schema_check) whose message names the key (``finetune.micro_batch_size``,
``experiments[1].finetune.devices``), says what was expected and what was found, so that a mistake costs
seconds at DAG-build time rather than a queued job.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from llmhpc import litgpt_args, schema_check
from llmhpc.cluster.site import site_gpu
from llmhpc.eval.registry import SCORERS
from llmhpc.schema_check import ConfigError
from llmhpc.settings import EvaluateSettings, FinetuneSettings
from llmhpc.train.registry import ENGINES


def load_schema(path: str | Path) -> dict:
    """Read at every Snakemake parse (each cluster job parses again): libyaml's loader where PyYAML has it (the
    schema in 0.009 s against the pure-Python loader's 0.063 s, 2 cores), with the same result."""
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def apply_defaults(instance: dict, schema: dict) -> dict:
    """Fill missing keys from the schema's `default`s, descending through `properties` (not array items:
    an experiment's overrides must stay sparse so that only what it names differs from `finetune`)."""
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            apply_defaults(instance[key], sub)
    return instance


def canonical(value):
    """Dicts with sorted keys, recursively: Snakemake compares rule params by their serialisation, so a
    reordered config must not look like a changed one and rerun jobs."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def experiment_settings(config: dict, schema: dict, index: int) -> dict:
    """The full finetune and evaluate settings of experiment `index`: the shared ones with its overrides."""
    exp = config["experiments"][index]
    out = {"name": exp["name"], "notes": exp.get("notes", "")}
    for section in ("finetune", "evaluate"):
        merged = copy.deepcopy(config[section])
        own = copy.deepcopy(exp.get(section) or {})
        if isinstance(own.get("engine_options"), dict) and isinstance(merged.get("engine_options"), dict):
            own["engine_options"] = {**merged["engine_options"], **own["engine_options"]}  # switch by switch
        merged.update(own)
        out[section] = canonical(merged)
    return out


def check(config: dict, schema: dict) -> dict:
    """Default and validate `config` in place; return {experiment name: settings}. Raise ConfigError
    listing every problem found."""
    apply_defaults(config, schema)
    problems = schema_check.problems(config, schema)
    seen = set()
    for i, exp in enumerate(config.get("experiments") or []):
        name = exp.get("name") if isinstance(exp, dict) else None
        if name in seen:
            problems.append(f"config key 'experiments[{i}].name': '{name}' is used twice; names must be unique")
        seen.add(name)
    if problems:
        raise ConfigError("config refused:\n  " + "\n  ".join(problems))

    experiments = {}
    section_schemas = {s: schema["properties"][s] for s in ("finetune", "evaluate")}
    for i, exp in enumerate(config["experiments"]):
        name = exp["name"]
        settings = experiment_settings(config, schema, i)
        for section, sub in section_schemas.items():
            src = (f"experiments[{i}]", section) if exp.get(section) else (section,)
            problems += schema_check.problems(settings[section], sub, prefix=src)
        if not problems:
            where = f"experiments[{i}].finetune" if exp.get("finetune") else "finetune"
            ft = FinetuneSettings.from_dict(settings["finetune"])
            for bad in (ft.batch_problem(), ft.warmup_problem(), ENGINES[ft.engine].problem(ft) or ft.problem()):
                if bad:
                    problems.append(f"config '{where}' (experiment '{name}'): {bad}")
            own_extra = "extra" in (exp.get("finetune") or {})
            for bad in litgpt_args.problems(ft.extra, ft.method, ENGINES[ft.engine],
                                            f"{where if own_extra else 'finetune'}.extra"):
                bad = f"{bad} (experiment '{name}')" if own_extra else bad  # a shared key: said once
                problems += [bad] if bad not in problems else []
            ev = EvaluateSettings.from_dict(settings["evaluate"])
            bad = ev.problem() or SCORERS[ev.scorer].problem(ev)
            if bad and exp.get("evaluate"):  # a shared key's problem is said once, below
                problems.append(f"config 'experiments[{i}].evaluate' (experiment '{name}'): {bad}")
        experiments[name] = settings
    if not problems:  # the shared section, as the base model is scored (the only scoring where no experiment is)
        ev = EvaluateSettings.from_dict(config["evaluate"])
        if bad := ev.problem() or SCORERS[ev.scorer].problem(ev):
            problems.append(f"config 'evaluate': {bad}")

    problems += _check_sources(config)
    if problems:
        raise ConfigError("config refused:\n  " + "\n  ".join(problems))
    sections = [config, *experiments.values()]
    if any(sec.get(k, {}).get("precision") == "auto" for sec in sections for k in ("finetune", "evaluate")):
        gpu = site_gpu(config["site"])  # may run nvidia-smi: only when a precision is left to the site
        for section in sections:
            resolve_precision(section, gpu)
    for key in list(config):
        config[key] = canonical(config[key])
    return experiments


def _check_sources(config: dict) -> list[str]:
    problems = []
    model = config["model"]
    if model["source"] == "hf":
        for key in ("repo_id", "revision"):
            if not model[key]:
                problems.append(f"config key 'model.{key}': required when model.source is 'hf' (pin a revision)")
    if model["source"] == "path":
        if not model["path"]:
            problems.append("config key 'model.path': required when model.source is 'path'")
        elif not Path(model["path"]).is_dir():
            problems.append(f"config key 'model.path': directory {model['path']} does not exist")
    if model["source"] == "pypi":
        for key in ("package", "package_file"):
            if not model[key]:
                problems.append(f"config key 'model.{key}': required when model.source is 'pypi'")
    if model["source"] == "gguf" and not (model["path"] and Path(model["path"]).is_file()):
        problems.append(f"config key 'model.path': a .gguf file is required when model.source is 'gguf'"
                        f" ({model['path'] or 'not set'})")
    for part in ("finetune", "eval"):
        data = config["data"][part]
        if data["source"] == "path":
            path = data["path"]
            if not path:
                problems.append(f"config key 'data.{part}.path': required when data.{part}.source is 'path'")
            elif not Path(path).exists():
                problems.append(f"config key 'data.{part}.path': {path} does not exist")
    if config["env"]["mode"] == "build" and not config["env"]["venv"]:
        problems.append("config key 'env.venv': required when env.mode is 'build' (where to create the venv)")
    return problems


# GPUs without bf16 tensor cores: half precision there is fp16 (16-mixed to train: pure fp16 full fine-tunes diverge).
NO_BF16 = ("V100", "P100", "T4", "TITAN V", "RTX 20")


def resolve_precision(section: dict, gpu: str | None) -> None:
    """Replace precision `auto` of the finetune and evaluate settings, in place, by the site's: 16-mixed (train) /
    16-true (score) on GPUs without bf16, bf16-true on other GPUs, 32-true without a GPU."""
    no_bf16 = gpu is not None and any(name in gpu for name in NO_BF16)
    for key, half in (("finetune", "16-mixed"), ("evaluate", "16-true")):
        if section.get(key, {}).get("precision") == "auto":
            section[key]["precision"] = "32-true" if gpu is None else half if no_bf16 else "bf16-true"
