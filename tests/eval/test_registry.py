"""The scorer registry: its names are the schema's, the options cross the process boundary unchanged, and the fast
scorer's flags build the options the evaluate stage builds from the same settings."""

import yaml

from conftest import SCHEMA
from llmhpc.eval.registry import FAST, REFERENCE, SCORERS, FastOptions, ReferenceOptions, ScoringJob
from llmhpc.settings import EvaluateSettings

JOB = ScoringJob("ckpt", "items.jsonl", "out/p.jsonl", "out/m.json")


def test_the_registry_names_the_schemas_scorers():
    schema = yaml.safe_load(open(SCHEMA, encoding="utf-8"))
    assert list(SCORERS) == schema["properties"]["evaluate"]["properties"]["scorer"]["enum"]
    assert SCORERS["reference"] is REFERENCE and SCORERS["fast"] is FAST


def test_options_cross_the_process_boundary_as_one_json_argument():
    settings = EvaluateSettings.from_dict({"scorer": "fast", "precision": "bf16-true", "reference_metrics": "ref.json"})
    options = FastOptions.from_settings(settings, JOB, limit=4)
    assert options.limit == 4 and options.precision == "bf16-true" and options.reference_metrics.name == "ref.json"
    assert FastOptions.from_json(options.to_json()) == options
    reference = ReferenceOptions.from_settings(EvaluateSettings.from_dict({}), JOB)
    assert reference.batch_size == 16 and reference.reference_metrics is None  # the schema's defaults


def test_the_fast_scorers_flags_build_the_stages_options():
    from llmhpc.eval import run

    settings = EvaluateSettings.from_dict({"scorer": "fast", "device": "cpu", "token_budget": 700})
    argv = ["--checkpoint", "ckpt", "--eval-file", "items.jsonl", "--predictions", "out/p.jsonl", "--metrics",
            "out/m.json", "--device", "cpu", "--token-budget", "700"]
    assert run.parse_args(argv) == FastOptions.from_settings(settings, JOB)
    assert run.parse_args(["--options", FastOptions.from_settings(settings, JOB).to_json()]) == run.parse_args(argv)


def test_what_each_scorer_can_do():
    spread = EvaluateSettings.from_dict({"scorer": "fast", "gpus": 4, "device": "cuda"})
    assert FAST.processes(spread) == 4 and REFERENCE.processes(spread) == 1
    assert FAST.processes(EvaluateSettings.from_dict({"gpus": 4, "device": "cpu"})) == 1
    over_nodes = EvaluateSettings.from_dict({"num_nodes": 2})
    assert FAST.problem(over_nodes) is None
    assert REFERENCE.problem(over_nodes).startswith("num_nodes 2 needs scorer fast on GPUs (the reference scorer")


def test_no_other_module_compares_scorer_names():
    """A scorer's name compared with evaluate.scorer outside the registry is a decision its entry should answer
    (the server's own `--path fast|reference` is another switch: it does not name a scorer)."""
    import re

    from conftest import REPO

    names = "|".join(SCORERS)
    compared = re.compile(rf"""scorer\W[^#]*(==|!=|\bin)\s*\(?\s*["']({names})["']|get\(\s*["']scorer["']\s*,""")
    found = []
    for path in [*(REPO / "src").rglob("*.py"), *(REPO / "workflow").rglob("*.py"), *(REPO / "workflow").rglob("*.smk")]:
        if path.name == "registry.py" and path.parent.name == "eval":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if compared.search(line):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == []
