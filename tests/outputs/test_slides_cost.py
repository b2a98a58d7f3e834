"""The cost slide: on a site with charge rates, each fine-tune's and each evaluation's measured cost in service units
beside the estimate its summary or metrics record, every number traced to the summary row it comes from (or computed
from such rows); no slide where the run was not charged (the embedded default on a laptop)."""

import csv
import re

import pytest
from test_slides import TEMPLATES, all_segments, body_data, build, dump_dom, recompute, results_tree, set_value, shown_number

from conftest import default_config
from llmhpc.outputs.slides import figures
from llmhpc.outputs.slides import html as deck_html
from llmhpc.outputs.slides import pdf as deck_pdf
from llmhpc.outputs.slides import pptx as deck_pptx

# A Gadi run's fine-tunes as their summaries record them (llmhpc.cluster.cost.measured): gpuvolta, 3 SU/h, 12 CPUs.
COSTS = {"baseline": {"su": 0.81, "su_estimate": 72, "su_units": 12},
         "mbs16": {"su": 0.62, "su_estimate": 72, "su_units": 12}}
# and their evaluations' (the base model's too), as llmhpc.stages.evaluate.run_stage adds them to metrics.json
EVAL_COSTS = {"base": {"su": 0.05, "su_estimate": 36, "su_units": 12, "stage_wall_s": 5.0},
              "baseline": {"su": 0.04, "su_estimate": 36, "su_units": 12, "stage_wall_s": 4.0},
              "mbs16": {"su": 0.04, "su_estimate": 36, "su_units": 12, "stage_wall_s": 4.0}}
UNITS = {"su": "SU", "su_estimate": "SU", "su_units": "resources", "stage_wall_s": "s"}


def charged(rows, costs=COSTS, eval_costs=EVAL_COSTS):
    for stage, by_name in (("finetune", costs), ("evaluate", eval_costs)):
        for name, figures_of in by_name.items():
            source = (f"results/finetune/{name}/summary.json" if stage == "finetune"
                      else f"results/evaluate/{name}/metrics.json")
            for metric, value in figures_of.items():
                set_value(rows, name, stage, metric, value, UNITS[metric], source)
            set_value(rows, name, stage, "su_rate", 3, "SU/h", source)
            set_value(rows, name, stage, "su_queue", "gpuvolta", "text", source)
            set_value(rows, name, stage, "su_resource", "cpus", "text", source)


def cost_slide(deck):
    return next((s for s in deck["slides"] if s["key"] == "cost"), None)


def summary_rows(tree):
    with open(tree / "summary.csv", newline="") as fh:
        return {(r["experiment"], r["stage"], r["metric"]): r for r in csv.DictReader(fh)}


def test_measured_cost_beside_the_estimate_every_number_from_the_summary(tmp_path):
    tree = results_tree(tmp_path, charged)
    deck = build(tree)
    slide = cost_slide(deck)
    assert slide["table"]["header"] == ["Job", "Queue", "Rate", "Charged per hour", "Stage wall time",
                                        "Measured", "Estimate", "Share of estimate"]
    rows = {figures.plain(r[0]): [figures.plain(c) for c in r[1:]] for r in slide["table"]["rows"]}
    assert list(rows) == ["base evaluation", "baseline fine-tune", "baseline evaluation", "mbs16 fine-tune",
                          "mbs16 evaluation"]
    assert rows["baseline fine-tune"][:2] == ["gpuvolta", "3.00 SU/h"] and rows["baseline fine-tune"][2] == "12.00 cpus"
    assert rows["baseline fine-tune"][4:] == ["0.81 SU", "72.00 SU", "1.1%"]
    assert rows["base evaluation"][4:] == ["0.05 SU", "36.00 SU", "0.1%"]
    assert "results/jobs/cost_estimate.json" in figures.plain(slide["bullets"][0])
    assert [(c["label"], figures.plain(c["value"])) for c in slide["stats"]] == [
        ("service units, every fine-tune and evaluation, measured", "1.56 SU")]
    # traced: each number to its summary row (the total and the share to the rows they were computed from)
    summary, cfg = summary_rows(tree), default_config()
    shown = [g for g in all_segments(slide) if g["kind"] == "num"]
    assert len(shown) == 5 * 8 + 1  # eight figures a row, and the total on its card
    for g in shown:
        f = deck["figures"][g["fig"]]
        value = recompute(f, deck["figures"], summary, {}, cfg)
        if f["decimals"] is None:
            assert f["text"] == str(value), f
        else:
            assert shown_number(f["text"]) == pytest.approx(round(value * f["scale"], f["decimals"])), f
    for g in all_segments(slide):
        assert g["kind"] != "text" or not re.search(r"\d", g["text"]), g
    assert {"results/finetune/baseline/summary.json", "results/finetune/mbs16/summary.json",
            "results/evaluate/base/metrics.json", "results/evaluate/mbs16/metrics.json"} <= set(slide["sources"])
    assert "0.81 SU: su of baseline (finetune) [results/finetune/baseline/summary.json]" in slide["notes"]


def test_no_cost_slide_where_the_run_was_not_charged(tmp_path):
    assert cost_slide(build(results_tree(tmp_path))) is None  # the embedded default: no site rates


def test_an_estimate_without_a_measured_cost_says_not_measured_and_gives_no_total(tmp_path):
    tree = results_tree(tmp_path, lambda rows: charged(rows, {"baseline": {"su_estimate": 72, "su_units": 12}}, {}))
    slide = cost_slide(build(tree))
    (row,) = slide["table"]["rows"]
    assert [figures.plain(c) for c in row[5:]] == [figures.NOT_MEASURED, "72.00 SU", figures.NOT_MEASURED]
    assert slide["stats"] == []  # no total where a job's measured cost is missing


def test_evaluations_alone_are_costed_where_only_they_carry_a_cost(tmp_path):
    tree = results_tree(tmp_path, lambda rows: charged(rows, {}, {"mbs16": EVAL_COSTS["mbs16"]}))
    slide = cost_slide(build(tree))
    (row,) = slide["table"]["rows"]
    assert figures.plain(row[0]) == "mbs16 evaluation"
    assert [figures.plain(c) for c in row[4:]] == ["4.0 s", "0.04 SU", "36.00 SU", "0.1%"]


def test_the_cost_slide_follows_time_and_the_renderers_show_it(tmp_path):
    from pptx import Presentation

    deck = build(results_tree(tmp_path, charged))
    keys = [s["key"] for s in deck["slides"]]
    assert keys.index("cost") == keys.index("time") + 1
    html = deck_html.render_html(deck, TEMPLATES)
    assert 'title="su of mbs16 (finetune) · results/finetune/mbs16/summary.json">0.62 SU</span>' in html
    deck_pptx.render_pptx(deck, tmp_path / "deck.pptx")
    slide = Presentation(tmp_path / "deck.pptx").slides[keys.index("cost")]
    cells = [c.text for sh in slide.shapes if sh.has_table for r in sh.table.rows for c in r.cells]
    assert "What the jobs cost" in [sh.text_frame.text for sh in slide.shapes if sh.has_text_frame]
    assert {"Measured", "Estimate", "0.62 SU", "72.00 SU"} <= set(cells)


@pytest.mark.browser
def test_the_cost_slide_fits_in_chromium(tmp_path):
    chromium = deck_pdf.find_chromium()
    if not chromium:
        pytest.skip("no Chromium on this machine (test_slides.py fails for it under CI)")
    deck = build(results_tree(tmp_path, charged))
    html = tmp_path / "deck.html"
    html.write_text(deck_html.render_html(deck, TEMPLATES))
    data = body_data(dump_dom(chromium, html))
    assert data["slides"] == len(deck["slides"]) and data["overflow"] == []
