"""The summary table: a recorded run (tests/data/run) plus what the fsdp2 engine's LoRA family adds, samples/s (the
ISC25 score), what ran, and the attention backend where the engine printed it (empty where it did not)."""

import json
import shutil
import types

import pytest

from conftest import REPO
from llmhpc import atomic
from llmhpc.cluster import cost
from llmhpc.outputs.summary_table import PHASES
from llmhpc.sources import embedded
from llmhpc.stages import evaluate
from llmhpc.stages.summary import build
from pbs_helpers import ASPIRE, GADI

RUN = REPO / "tests/data/run"
EXPERIMENTS = ["baseline", "mbs16"]


def table_of(tmp_path, edit_mbs16: dict, edit_run=None):
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    if edit_run is not None:
        edit_run(run)
    path = run / "finetune/mbs16/summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit_mbs16}))
    train, val = embedded.finetune_records()
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "val.json").write_text(json.dumps(val))
    data = {"train": tmp_path / "train.json", "val": tmp_path / "val.json",
            "eval": embedded.shipped_dir() / "hellaswag.jsonl"}
    return build("run", EXPERIMENTS, run / "env/manifest.json",
                 {e: run / f"finetune/{e}/summary.json" for e in EXPERIMENTS},
                 {m: run / f"evaluate/{m}/metrics.json" for m in ["base", *EXPERIMENTS]}, data), run


def cell(table, experiment, metric):
    rows = table[(table.experiment == experiment) & (table.stage == "finetune") & (table.metric == metric)]
    return rows.iloc[0] if len(rows) == 1 else None


def test_samples_per_second_and_what_ran_are_rows_with_their_source(tmp_path):
    table, run = table_of(tmp_path, {"samples_per_s": 12.5, "engine": "fsdp2", "method": "dora", "float8": True,
                                     "attention": "flex", "max_seq_length": 512, "train_records": 232,
                                     "trained_samples": 232})
    row = cell(table, "mbs16", "samples_per_s")
    assert (row.value, row.unit, row.source) == (12.5, "samples/s", str(run / "finetune/mbs16/summary.json"))
    # what samples/s counts: the training records and the samples the run trained
    assert (cell(table, "mbs16", "train_records").unit, cell(table, "mbs16", "trained_samples").unit) == (
        "count", "samples")
    assert cell(table, "mbs16", "trained_samples").value == 232
    assert cell(table, "mbs16", "max_seq_length").value == 512
    assert cell(table, "mbs16", "tokens_per_s_per_device").unit == "tokens/s"
    texts = {m: cell(table, "mbs16", m).value for m in ("engine", "method", "float8", "attention")}
    assert texts == {"engine": "fsdp2", "method": "dora", "float8": True, "attention": "flex"}


def test_each_evaluations_scorer_and_precision_are_rows(tmp_path):
    """Which scorer (reference or fast) made an accuracy, and in what precision: the deck and the bundle say so."""
    def fast(run):
        path = run / "evaluate/mbs16/metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "scorer": "fast", "precision": "bf16-true"}))

    table, run = table_of(tmp_path, {}, fast)
    rows = table[(table.stage == "evaluate") & table.metric.isin(["scorer", "precision"])]
    got = {(r.experiment, r.metric): (r.value, r.unit, r.source) for r in rows.itertuples()}
    assert got[("mbs16", "scorer")] == ("fast", "text", str(run / "evaluate/mbs16/metrics.json"))
    assert got[("mbs16", "precision")][0] == "bf16-true"
    assert got[("base", "scorer")][0] == got[("baseline", "scorer")][0] == "reference"
    assert cell(table, "baseline", "engine").value == "litgpt"


def test_attention_is_left_empty_where_the_engine_did_not_print_it(tmp_path):
    table, _ = table_of(tmp_path, {})
    for name in EXPERIMENTS:  # a recorded stock litgpt run: no backend printed, none invented
        assert cell(table, name, "attention").value is None
        assert cell(table, name, "samples_per_s") is None  # recorded before samples/s was summarised
    assert cell(table, "baseline", "method").value == "full"


def test_measured_cost_in_service_units_is_a_row_where_the_site_had_rates(tmp_path):
    table, _ = table_of(tmp_path, {"su": 18.0, "su_queue": "gpuvolta", "su_rate": 3, "su_units": 12.0})
    assert (cell(table, "mbs16", "su").value, cell(table, "mbs16", "su").unit) == (18.0, "SU")
    assert cell(table, "baseline", "su") is None  # a site without rates: no row, never a guessed figure


# The evaluation job of experiment mbs16 as Snakemake describes it to the cost functions (workflow/scripts/evaluate.py)
EVALUATE_MBS16 = {"rule": "evaluate", "wildcards": {"model": "mbs16"}, "threads": 1,
                  "resources": {"nodes": 1, "gpus_per_node": 1, "mem_mb": 8000, "runtime": 30}}


def evaluated_on(site, monkeypatch, lines):
    """The evaluate stage on a site, its scorer standing in (the recorded metrics), 1800 s of stage wall time in a
    process 12 s old when the stage began."""

    def edit(run):
        path = run / "evaluate/mbs16/metrics.json"
        scored = json.loads(path.read_text())

        def scorer(settings, checkpoint, eval_file, predictions, metrics_path, log=print, launch=None):
            atomic.write_json(metrics_path, scored)
            return scored

        monkeypatch.setattr(evaluate, "run", scorer)
        monkeypatch.setattr(evaluate, "time", types.SimpleNamespace(perf_counter=iter([100.0, 1900.0]).__next__))
        monkeypatch.setattr(evaluate, "process_age", lambda: 12.0)  # the job's process began 12 s before the stage
        evaluate.run_stage({}, run / "ckpt", run / "eval.jsonl", run / "p.jsonl", path, lines.append,
                           cost_of=lambda wall_s: cost.measured(EVALUATE_MBS16, site, wall_s))

    return edit


def evaluate_cell(table, experiment, metric):
    rows = table[(table.experiment == experiment) & (table.stage == "evaluate") & (table.metric == metric)]
    return rows.iloc[0] if len(rows) == 1 else None


def test_an_evaluations_measured_cost_is_a_row_where_the_site_had_rates(tmp_path, monkeypatch):
    lines = []
    table, run = table_of(tmp_path, {}, evaluated_on(GADI, monkeypatch, lines))
    su = evaluate_cell(table, "mbs16", "su")  # 3 SU/h x 12 CPUs' worth x 0.5 h
    assert (su.value, su.unit, su.source) == (18.0, "SU", str(run / "evaluate/mbs16/metrics.json"))
    assert evaluate_cell(table, "mbs16", "su_estimate").value == 18.0  # its requested 30 min, as the run's estimate
    assert evaluate_cell(table, "mbs16", "su_queue").value == "gpuvolta"
    assert evaluate_cell(table, "mbs16", "stage_wall_s").value == 1800.0
    assert evaluate_cell(table, "mbs16", "acc") is not None  # the scores stay
    assert lines == ["measured cost: 18 SU (gpuvolta, 3 SU/h x 12 cpus x 0.5000 h)"]
    assert evaluate_cell(table, "baseline", "su") is None  # not run by the stage here: no figure


def test_an_evaluations_phases_are_rows_that_add_up_to_its_job_wall(tmp_path, monkeypatch):
    """The job's wall runs from its process's start (12 s before the stage's 1800 s): what the scheduler charges."""
    table, run = table_of(tmp_path, {}, evaluated_on(ASPIRE, monkeypatch, []))
    scored = json.loads((run / "evaluate/mbs16/metrics.json").read_text())
    phases = {p: evaluate_cell(table, "mbs16", f"phase_{p}_s") for p in PHASES}
    assert all(c is not None and c.unit == "s" for c in phases.values()), phases
    assert {p: c.value for p, c in phases.items()} == {p: scored[f"phase_{p}_s"] for p in PHASES}
    assert phases["load"].value == scored["load_s"] and phases["work"].value == scored["score_s"]
    assert evaluate_cell(table, "mbs16", "job_wall_s").value == 1812.0
    assert sum(c.value for c in phases.values()) == pytest.approx(1812.0)
    assert evaluate_cell(table, "baseline", "phase_load_s") is None  # not run by the stage here: no figure


def test_a_fine_tunes_recorded_phases_are_rows(tmp_path):
    given = {"phase_startup_s": 2.5, "phase_load_s": 3.0, "phase_warmup_s": None, "phase_work_s": 50.0,
             "phase_save_s": 1.25, "phase_exit_s": 0.5}
    table, _ = table_of(tmp_path, given)
    for metric, v in given.items():
        row = cell(table, "mbs16", metric)
        if v is None:  # not known: no row, never a guessed 0
            assert row is None, metric
        else:
            assert (row.value, row.unit) == (v, "s"), metric
    assert cell(table, "baseline", "phase_work_s") is None  # a summary written before the phases were recorded


def test_no_evaluation_cost_where_the_site_has_no_rates(tmp_path, monkeypatch):
    lines = []
    table, run = table_of(tmp_path, {}, evaluated_on(ASPIRE, monkeypatch, lines))
    for metric in ("su", "su_estimate", "su_queue", "su_rate"):
        assert evaluate_cell(table, "mbs16", metric) is None  # never 0 SU
    assert evaluate_cell(table, "mbs16", "stage_wall_s").value == 1800.0
    assert "su" not in json.loads((run / "evaluate/mbs16/metrics.json").read_text()) and lines == []


def test_a_resumed_fine_tune_gives_its_step_attempts_and_lost_time_as_rows(tmp_path):
    table, run = table_of(tmp_path, {"resumed_from_step": 10, "attempts": 2, "lost_time_s": 14.2,
                                     "last_attempt_training_time_s": 19.0})
    figures = {m: (cell(table, "mbs16", m).value, cell(table, "mbs16", m).unit)
               for m in ("resumed_from_step", "attempts", "lost_time_s", "last_attempt_training_time_s")}
    assert figures == {"resumed_from_step": (10, "count"), "attempts": (2, "count"), "lost_time_s": (14.2, "s"),
                       "last_attempt_training_time_s": (19.0, "s")}
    assert cell(table, "baseline", "resumed_from_step") is None  # not resumed: no row
