"""The summary table: a recorded run (tests/data/run) plus what the fsdp2 engine's LoRA family adds, samples/s (the
ISC25 score), what ran, and the attention backend where the engine printed it (empty where it did not)."""

import json
import shutil

from conftest import REPO
from llmhpc.sources import embedded
from llmhpc.stages.summary import build

RUN = REPO / "tests/data/run"
EXPERIMENTS = ["baseline", "mbs16"]


def table_of(tmp_path, edit_mbs16: dict):
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
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
                                     "attention": "flex", "max_seq_length": 512})
    row = cell(table, "mbs16", "samples_per_s")
    assert (row.value, row.unit, row.source) == (12.5, "samples/s", str(run / "finetune/mbs16/summary.json"))
    assert cell(table, "mbs16", "max_seq_length").value == 512
    assert cell(table, "mbs16", "tokens_per_s_per_device").unit == "tokens/s"
    texts = {m: cell(table, "mbs16", m).value for m in ("engine", "method", "float8", "attention")}
    assert texts == {"engine": "fsdp2", "method": "dora", "float8": True, "attention": "flex"}


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
