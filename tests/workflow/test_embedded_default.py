"""The embedded default end to end through real Snakemake and real LitGPT, then what reruns and what doesn't."""

import contextlib
import json
import os
import re
import subprocess
import tarfile
import time

import pandas as pd
import pytest
import yaml

from conftest import copy_repo, default_config, snakemake

pytestmark = [pytest.mark.snakemake, pytest.mark.e2e]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("e2e") / "repo")
    t0 = time.perf_counter()
    proc = snakemake(repo)  # the README's command: the default profile is picked up from profiles/default
    print(f"embedded default: {time.perf_counter() - t0:.1f} s")
    assert "Using workflow specific profile profiles/default" in proc.stdout + proc.stderr
    return repo


def jobs_planned(proc) -> dict:
    """{rule: count} from the job-stats table of a dry run."""
    text = proc.stdout
    table = text[text.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def jobs_done(proc) -> dict:
    """{rule: count} of the jobs a run finished."""
    rules = re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)$", proc.stdout + proc.stderr, re.M)
    return {rule: rules.count(rule) for rule in rules}


def test_every_stage_leaves_its_outputs(done):
    r = done / "results"
    assert json.loads((r / "env/manifest.json").read_text())["litgpt"] == "0.5.13"
    assert (r / "weights/hf/model.safetensors").is_file()
    assert (r / "checkpoints/base/lit_model.pth").is_file() and (r / "checkpoints/base/model_config.yaml").is_file()
    assert (r / "data/finetune/train.json").is_file() and (r / "data/eval/hellaswag.jsonl").is_file()
    for exp in ("baseline", "mbs16"):
        d = r / "finetune" / exp
        for name in ("litgpt.yaml", "finetune.stdout", "metrics.csv", "summary.json", "out/final/lit_model.pth"):
            assert (d / name).is_file(), d / name
        s = json.loads((d / "summary.json").read_text())
        assert s["exit_code"] == 0 and s["steps"] > 0 and s["tokens_per_s"] > 0 and s["training_time_s"] > 0
        assert "Training Time" in (d / "finetune.stdout").read_text()
        assert (r / "logs/finetune" / f"{exp}.log").is_file()
    for model in ("base", "baseline", "mbs16"):
        rows = [json.loads(line) for line in (r / "evaluate" / model / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 192 and all(len(row["loglikelihoods"]) == 4 for row in rows)


def test_fine_tuning_raises_accuracy(done):
    acc = {m: json.loads((done / f"results/evaluate/{m}/metrics.json").read_text())["acc"]
           for m in ("base", "baseline", "mbs16")}
    print(acc)
    assert acc["baseline"] > acc["base"] + 0.1
    assert acc["mbs16"] > acc["base"] + 0.1


def test_summary_table_covers_every_experiment_and_stage(done):
    table = pd.read_csv(done / "results/summary.csv")
    assert list(table.columns) == ["run", "experiment", "stage", "metric", "value", "unit", "source"]
    assert set(table.stage) == {"env", "data", "finetune", "evaluate"}
    assert set(table.experiment) == {"all", "baseline", "mbs16", "base"}
    row = table[(table.experiment == "mbs16") & (table.metric == "tokens_per_s")].iloc[0]
    assert row.unit == "tokens/s" and row.source == "results/finetune/mbs16/summary.json"
    recorded = json.loads((done / row.source).read_text())["tokens_per_s"]
    assert float(row.value) == recorded  # traceable: the number is the one in its source
    assert table.unit.notna().all()
    records = table[(table.stage == "data") & (table.metric == "train_records")].iloc[0]
    assert int(records.value) == 232 and records.source == "results/data/finetune/train.json"


def test_second_run_has_nothing_to_do(done):
    t0 = time.perf_counter()
    proc = snakemake(done)
    print(f"no-op rerun: {time.perf_counter() - t0:.1f} s")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_forcerun_evaluate_reruns_only_evaluate_and_downstream(done):
    planned = jobs_planned(snakemake(done, "-n", "--forcerun", "evaluate"))
    assert planned == {"evaluate": 3, "summary": 1, "plots": 1, "slides": 1, "submission": 1, "all": 1}


def test_until_and_single_target(done):
    planned = jobs_planned(snakemake(done, "-n", "--forcerun", "finetune", "--until", "finetune"))
    assert planned == {"finetune": 2}
    planned = jobs_planned(snakemake(done, "-n", "--force", "results/evaluate/base/metrics.json"))
    assert planned == {"evaluate": 1}


def test_adding_an_experiment_adds_only_its_jobs(done):
    cfg = default_config()  # written back with sorted keys: a reordered config must not rerun anything
    cfg["experiments"].append({"name": "lr-low", "finetune": {"learning_rate": 0.001}})
    (done / "more.yaml").write_text(yaml.safe_dump(cfg))
    planned = jobs_planned(snakemake(done, "-n", "--configfile", "more.yaml"))
    assert planned == {"finetune_config": 1, "finetune": 1, "evaluate": 1, "summary": 1, "plots": 1, "slides": 1,
                       "submission": 1, "all": 1}


def test_the_run_leaves_plots_slides_and_a_verifiable_submission(done):
    r = done / "results"
    for name in ("loss", "throughput", "time_breakdown", "memory", "eval_accuracy", "eval_tradeoff"):
        assert (r / f"plots/{name}.png").stat().st_size > 10_000 and (r / f"plots/{name}.svg").is_file()
    model = json.loads((r / "slides/slides.json").read_text())
    titles = [slide["title"] for slide in model["slides"]]
    assert titles[0] and "How to reproduce" in titles
    html = (r / "slides/deck.html").read_text()
    assert all(t.split(":")[0] in html for t in titles) and "src=\"http" not in html  # self-contained
    assert (r / "slides/deck.pdf").read_bytes().startswith(b"%PDF") and (r / "slides/deck.pptx").is_file()
    (archive,) = (r / "submission").glob("*.tar.gz")  # the run name, then its engines, scorers and precisions
    name = archive.name.removesuffix(".tar.gz")
    assert name.startswith("embedded-default_litgpt_"), name
    check = subprocess.run(["sha256sum", "-c", f"{name}.sha256"], cwd=r / "submission", capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert f"{name}/MANIFEST" in names and f"{name}/slides/deck.pdf" in names
    assert f"{name}/configs/litgpt/mbs16.yaml" in names
    assert not [n for n in names if n.endswith((".pth", ".safetensors", ".bin", ".pt"))]


def test_report_by_target_and_by_flag(done):
    snakemake(done, "report")  # the design card's spelling: a target
    snakemake(done, "--report", "results/report-flag.html")
    for name in ("report.html", "report-flag.html"):
        text = (done / "results" / name).read_text()
        for caption in ("Training loss", "Fine-tune", "Evaluation", "Slides", "Submission"):
            assert caption in text, (name, caption)


@contextlib.contextmanager
def edited(path, text: str):
    """`path` with `text` appended for the block, then as it was, its modification time too: the tests after it
    copy this run's tree, and a newer input would make Snakemake redo what depends on it there."""
    original, stat = path.read_text(), path.stat()
    try:
        path.write_text(original + text)
        yield
    finally:
        path.write_text(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_editing_a_template_rerenders_only_the_slides(done):
    with edited(done / "workflow/templates/deck.css", "\n/* edited */\n"):
        planned = jobs_planned(snakemake(done, "-n"))
    assert planned == {"slides": 1, "submission": 1, "all": 1}


def test_changing_envs_reruns_the_pipeline(done):
    with edited(done / "envs/cpu.txt", "\n# touched\n"):
        planned = jobs_planned(snakemake(done, "-n"))
    assert planned["env"] == 1 and planned["finetune"] == 2 and planned["convert"] == 1
    after = snakemake(done, "-n")
    assert "Nothing to be done" in after.stdout + after.stderr  # as it was: nothing to redo for the tests after


def test_the_fast_scorer_gives_the_reference_scorers_answers_through_the_workflow(done, tmp_path):
    """The embedded default scores with the fast scorer; evaluate.scorer: reference, through the evaluate rule on the
    same models, gives every item's choice and log-likelihoods as the fast one did (fp32 on CPU), and the metrics
    say which scorer ran."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(done, repo, symlinks=True)
    cfg = default_config()
    cfg["evaluate"]["scorer"] = "reference"
    (repo / "reference.yaml").write_text(yaml.safe_dump(cfg))
    # Snakemake's default rerun triggers on a copy of the finished project: the embedded sets' paths are relative
    # to it, so nothing upstream reruns; the scorer is a parameter, so the two evaluations alone run again, on the
    # very checkpoints that the fast scorer scored.
    proc = snakemake(repo, "--configfile", "reference.yaml", "--", "results/evaluate/base/metrics.json",
                     "results/evaluate/mbs16/metrics.json")
    assert jobs_done(proc) == {"evaluate": 2}
    for model in ("base", "mbs16"):
        ref = [json.loads(line) for line in (repo / f"results/evaluate/{model}/predictions.jsonl").read_text().splitlines()]
        fast = [json.loads(line) for line in (done / f"results/evaluate/{model}/predictions.jsonl").read_text().splitlines()]
        assert [(r["pred"], r["pred_norm"]) for r in fast] == [(r["pred"], r["pred_norm"]) for r in ref]
        worst = max(abs(a - b) for f, r in zip(fast, ref) for a, b in zip(f["loglikelihoods"], r["loglikelihoods"]))
        assert worst < 1e-3, worst
        assert json.loads((done / f"results/evaluate/{model}/metrics.json").read_text())["scorer"] == "fast"
        assert json.loads((repo / f"results/evaluate/{model}/metrics.json").read_text())["scorer"] == "reference"


def test_an_experiment_on_the_fsdp2_engine_runs_through_the_workflow(done, tmp_path):
    """finetune.engine: fsdp2 as one experiment beside stock: the finetune rule starts the engine on the YAML its
    config rule wrote, the summary reads its report, and the evaluate rule scores its checkpoint."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(done, repo, symlinks=True)
    cfg = default_config()
    cfg["experiments"].append({"name": "fsdp2", "notes": "The workflow's engine.", "finetune": {
        "engine": "fsdp2", "max_steps": 4, "engine_options": {"compile": False}}})
    (repo / "engine.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(repo, "--configfile", "engine.yaml", "--", "results/evaluate/fsdp2/metrics.json")
    run = repo / "results/finetune/fsdp2"
    assert "python -m llmhpc.train.fsdp2 --config" in (run / "litgpt.yaml").read_text().splitlines()[1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["command"].endswith(f"-m llmhpc.train.fsdp2 --config {run / 'litgpt.yaml'}") or \
        "-m llmhpc.train.fsdp2 --config results/finetune/fsdp2/litgpt.yaml" in summary["command"]
    assert summary["exit_code"] == 0 and summary["steps"] == 4
    assert summary["training_time_s"] > 0 and summary["tokens_per_s"] > 0
    assert "Engine fsdp2 | packing=on" in (run / "finetune.stdout").read_text()
    assert json.loads((repo / "results/evaluate/fsdp2/metrics.json").read_text())["items"] > 0


def test_rerun_after_a_killed_finetune_resumes_from_its_step_checkpoint(done, tmp_path):
    """A workflow run whose fine-tune job is killed mid-run (the job's processes SIGKILLed once a step checkpoint is
    whole) fails; the same `snakemake` command again resumes the fine-tune from that step checkpoint, which survived
    Snakemake's removal of the failed job's outputs, and removes it once finished. The run starts from a copy of the
    finished run's tree less its fine-tunes: the environment, base checkpoint and data it takes are there already
    (their rules' parameters do not read the quick config), so only the cut fine-tune's config and the fine-tune run."""
    import sys
    from pathlib import Path

    from conftest import seeded_copy
    from resume_helpers import ARGS, TARGET, kill_the_finetune_job, resumable_quick

    repo = seeded_copy(done, tmp_path / "repo", "results/finetune")
    resumable_quick(repo)
    out = repo / "results/finetune/baseline/out"
    log = open(tmp_path / "first.out", "w+")
    first = subprocess.Popen([sys.executable, "-m", "snakemake", *ARGS], cwd=repo, stdout=log,
                             stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(repo / "src")))
    try:
        kill_the_finetune_job(first, repo)
        assert first.wait(120) != 0
    finally:
        if first.poll() is None:
            first.kill()
    log.seek(0)
    output = log.read()
    assert "Error in rule finetune" in output, output[-3000:]
    assert (out / "step-000001/lit_model.pth").is_file() and not (out / "final").exists()

    rerun = snakemake(repo, *ARGS)  # the same command: no --rerun-incomplete needed after a failed job
    rule_log = (repo / "results/logs/finetune/baseline.log").read_text()
    summary = json.loads((repo / TARGET).read_text())
    step = summary["resumed_from_step"]
    assert step is not None and 1 <= step < 4 and f"resume: from step {step}" in rule_log, rerun.stdout[-2000:]
    stdout = (repo / "results/finetune/baseline/finetune.stdout").read_text()
    assert f"Resuming training from {Path('results/finetune/baseline/out') / f'step-{step:06d}'}" in stdout
    assert summary["exit_code"] == 0 and (out / "final/lit_model.pth").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["final", "logs"]  # the step checkpoints went once done
    assert set(jobs_done(rerun)) == {"finetune"}, jobs_done(rerun)  # nothing before the fine-tune was made again
