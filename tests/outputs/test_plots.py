"""The plots stage: every plot is written as PNG and SVG and shows something, the numbers written on the plots
are the ones computed from the inputs, missing data is said in the figure, an experiment keeps its colour, and
the real Snakemake rule puts every plot with its caption into the report."""

import dataclasses
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest

from conftest import REPO, copy_repo, snakemake
from llmhpc.snakefile_helpers import PLOT_NAMES
from llmhpc.stages import plots

# A real run of the embedded default (summary table, both experiments' LitGPT metrics.csv, the env manifest
# without its package list).
DATA = REPO / "tests/data/plots"
EXPERIMENTS = ["baseline", "mbs16"]
SVG = "{http://www.w3.org/2000/svg}"


def real_inputs():
    return plots.read_table(DATA / "summary.csv"), {e: DATA / f"metrics-{e}.csv" for e in EXPERIMENTS}


def manifest():
    return json.loads((DATA / "manifest.json").read_text())


def svg_texts(path) -> list[str]:
    """Every text drawn in an SVG (svg.fonttype none keeps text as <text> elements)."""
    root = ET.parse(path).getroot()
    return ["".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")]


def make_all(tmp_path, table=None, metrics=None, man=None, experiments=EXPERIMENTS, tolerance=0.05):
    t, m = real_inputs()
    table = t if table is None else table
    out = tmp_path / "plots"
    return [
        plots.plot_loss(table, m if metrics is None else metrics, experiments, out),
        plots.plot_throughput(table, experiments, out),
        plots.plot_time_breakdown(table, experiments, out),
        plots.plot_memory(table, experiments, manifest() if man is None else man, out),
        plots.plot_eval_accuracy(table, experiments, out),
        plots.plot_eval_tradeoff(table, experiments, tolerance, out),
    ]


def add_rows(table, rows):
    extra = pd.DataFrame([["run", e, stage, metric, str(v), "", "test"] for e, stage, metric, v in rows],
                         columns=table.columns)
    return pd.concat([table, extra], ignore_index=True)


def with_samples_per_s(table):
    """The stored run's table with the samples/s the summary stage now records, from the run's own figures
    (optimizer steps x global batch / training time)."""
    rows = []
    for e in EXPERIMENTS:
        steps, batch, time = (plots.value(table, e, "finetune", m) for m in ("steps", "global_batch_size",
                                                                              "training_time_s"))
        rows += [(e, "finetune", "samples_per_s", round(steps * batch / time, 3)), (e, "finetune", "method", "full")]
    return add_rows(table, rows)


@pytest.mark.plots
def test_every_plot_is_a_png_and_an_svg_that_shows_something(tmp_path):
    with_samples_per_s(real_inputs()[0]).to_csv(tmp_path / "summary.csv", index=False)
    made = plots.make_all(tmp_path / "summary.csv", real_inputs()[1], DATA / "manifest.json", EXPERIMENTS, 0.05,
                          tmp_path / "plots")
    assert list(made) == list(PLOT_NAMES)
    for name in PLOT_NAMES:
        png, svg = tmp_path / f"plots/{name}.png", tmp_path / f"plots/{name}.svg"
        assert made[name].files == [png, svg]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = mpimg.imread(png)
        height, width = pixels.shape[:2]
        # the shape of a slide's plot box beside its text (deck.css), which the plot fills
        assert 1.2 < width / height < 1.35, f"{name} does not have the shape of its box on a slide: {width}x{height}"
        assert width >= 1280, f"{name} is too small for a slide: {width}px"
        # not blank: a white canvas has no variance; a plot with bars, lines and text has plenty
        assert pixels[..., :3].std() > 0.05, f"{name}.png looks blank"
        assert (pixels[..., :3] < 0.5).mean() > 0.005, f"{name}.png has almost nothing dark on it (text, axes)"
        root = ET.parse(svg).getroot()
        assert root.tag == f"{SVG}svg"
        assert len(svg_texts(svg)) > 5, f"{name}.svg has no text"


def test_speedup_on_each_bar_is_the_summarys_training_time_ratio(tmp_path):
    """One definition of speedup in the deck: the baseline's training time over the experiment's (the summary's
    speedup_vs_baseline, which the slides' text shows), not a ratio of tokens/s (1.67× here, against 1.62×: litgpt
    counts padding, and the experiments pad differently)."""
    table, _ = real_inputs()
    plot = plots.plot_throughput(table, EXPERIMENTS, tmp_path)
    base, fast = (plots.value(table, e, "finetune", "training_time_s") for e in EXPERIMENTS)
    tokens = [plots.value(table, e, "finetune", "tokens_per_s_per_device") for e in EXPERIMENTS]
    assert f"{base / fast:.2f}×" != f"{tokens[1] / tokens[0]:.2f}×"  # the two definitions differ on this run
    assert plot.labels == {"baseline": "1.00×", "mbs16": f"{base / fast:.2f}×"}  # the deck's one ratio format
    texts = svg_texts(tmp_path / "throughput.svg")
    assert f"{base / fast:.2f}×" in texts and "1.00×" in texts
    assert not any(re.search(r"×\d|\d\s*x\b", s) for s in texts), texts

    # a slower third experiment: the labels follow the summary's ratios
    table = add_rows(table, [("slow", "finetune", "tokens_per_s_per_device", 300.0),
                             ("slow", "finetune", "speedup_vs_baseline", 0.75)])
    plot = plots.plot_throughput(table, [*EXPERIMENTS, "slow"], tmp_path)
    assert plot.labels == {"baseline": "1.00×", "mbs16": f"{base / fast:.2f}×", "slow": "0.75×"}
    assert "0.75×" in svg_texts(tmp_path / "throughput.svg")


@pytest.mark.plots
def test_an_experiment_keeps_its_colour_in_every_plot(tmp_path):
    made = make_all(tmp_path)
    for model in ["base", *EXPERIMENTS]:
        seen = {p.name: p.drawn[model] for p in made if model in p.drawn}
        assert len(seen) >= (2 if model == "base" else 6), f"{model} is missing from plots: {seen}"
        assert len(set(seen.values())) == 1, f"{model} changes colour: {seen}"
    firsts = {m: next(p.drawn[m] for p in made if m in p.drawn) for m in ["base", *EXPERIMENTS]}
    assert len(set(firsts.values())) == 3, f"two models share a colour: {firsts}"
    # the baseline is the first experiment: its colour does not depend on which other experiments exist
    alone = plots.plot_throughput(real_inputs()[0], ["baseline"], tmp_path / "alone")
    assert alone.drawn["baseline"] == firsts["baseline"]


@pytest.mark.plots
def test_an_experiment_not_run_yet_is_said_in_every_plot(tmp_path):
    table, metrics = real_inputs()
    table = table[table["experiment"] != "mbs16"]
    made = make_all(tmp_path, table=table, metrics={"baseline": metrics["baseline"], "mbs16": None})
    for plot in made:
        assert any("mbs16" in m for m in plot.missing), f"{plot.name} does not say mbs16 is missing: {plot.missing}"
        texts = " ".join(svg_texts(plot.files[1]))
        assert "Missing:" in texts and "mbs16" in texts, f"{plot.name}.svg does not say what is missing"
        assert "mbs16" not in plot.drawn
        assert "baseline" in plot.drawn, f"{plot.name} dropped the experiment that did run"


@pytest.mark.plots
def test_nothing_measured_yet_still_gives_every_plot(tmp_path):
    empty = pd.DataFrame(columns=["run", "experiment", "stage", "metric", "value", "unit", "source"])
    made = plots.make_all(tmp_path / "none.csv", {e: None for e in EXPERIMENTS}, tmp_path / "none.json",
                          EXPERIMENTS, 0.05, tmp_path / "plots")
    assert made.keys() == set(PLOT_NAMES)
    for plot in made.values():
        assert all(f.is_file() for f in plot.files)
        assert not plot.drawn and plot.missing
        assert any("yet" in t for t in svg_texts(plot.files[1])), plot.name
    assert plots.value(empty, "baseline", "finetune", "tokens_per_s") is None


def test_memory_against_the_gpu_capacity_where_there_is_a_gpu(tmp_path):
    table, _ = real_inputs()
    table = add_rows(table, [("baseline", "finetune", "peak_memory_gb", 61.3),
                             ("mbs16", "finetune", "peak_memory_gb", 97.8)])
    gpu = dict(manifest(), gpus=[{"index": 0, "name": "NVIDIA H200", "memory_gb": 150.0}])
    plot = plots.plot_memory(table, EXPERIMENTS, gpu, tmp_path)
    texts = svg_texts(tmp_path / "memory.svg")
    assert "NVIDIA H200 memory: 150 GB" in texts
    assert "61.3 GB" in texts and "97.8 GB" in texts  # the GPU figures, not the host RSS beside them
    assert plot.missing == []
    assert "predicted by the engine" not in texts  # stock litgpt predicts nothing


def test_the_engines_predicted_memory_is_drawn_beside_its_measured_peak(tmp_path):
    table, _ = real_inputs()
    table = add_rows(table, [("baseline", "finetune", "peak_memory_gb", 44.95),
                             ("baseline", "finetune", "predicted_memory_gb", 160.0),
                             ("mbs16", "finetune", "peak_memory_gb", 97.8)])
    gpu = dict(manifest(), gpus=[{"index": 0, "name": "NVIDIA H200", "memory_gb": 150.0}])
    plots.plot_memory(table, EXPERIMENTS, gpu, tmp_path)
    assert "predicted by the engine" in svg_texts(tmp_path / "memory.svg")
    with open(tmp_path / "memory.svg") as fh:
        svg = fh.read()
    assert svg.count("predicted by the engine") == 1  # one legend entry

    # the embedded default's CPU run: host RSS, labelled as such; the host's RAM is not in this manifest. Said as
    # plain remarks in grey, not as a red "Missing:" (nothing is missing: a CPU has no GPU memory to measure).
    plot = plots.plot_memory(real_inputs()[0], EXPERIMENTS, manifest(), tmp_path)
    assert plot.missing == []
    assert "GPU memory: not measured on a CPU run; hatched bars are the host's peak RSS" in plot.remarks
    assert any(r.startswith("Host RAM: ") for r in plot.remarks)
    texts = svg_texts(tmp_path / "memory.svg")
    assert "(host RSS)" in " ".join(texts)
    assert not any("Missing" in s or "?" in s for s in texts), texts
    plot = plots.plot_memory(real_inputs()[0], EXPERIMENTS, dict(manifest(), host_memory_gb=4.0), tmp_path)
    assert "host RAM (vm): 4 GB" in svg_texts(tmp_path / "memory.svg")


def test_a_capacity_far_above_the_bars_is_written_not_drawn(tmp_path):
    """A laptop's 25 GB of RAM against peaks of 1.8 and 2.4 GB: a line at 25 GB would squash the bars into the
    bottom tenth of the plot, so the capacity is written at the top and the axis fits the bars."""
    table = real_inputs()[0]
    highest = max(plots.value(table, e, "finetune", "peak_host_memory_gb") for e in EXPERIMENTS)
    plot = plots.plot_memory(table, EXPERIMENTS, dict(manifest(), host_memory_gb=25.0), tmp_path)
    assert plot.ylim[1] < 1.5 * highest, plot.ylim
    texts = svg_texts(tmp_path / "memory.svg")
    assert "host RAM (vm): 25 GB, far above these bars" in texts
    assert "host RAM (vm): 25 GB" not in texts  # no line drawn for it


PHASES = ("startup", "load", "warmup", "work", "save", "exit")


def phase_rows(jobs: dict[tuple[str, str], dict[str, float]]):
    """Summary rows of jobs that recorded their phases: {(experiment, stage): {phase: seconds}}, and a stage wall
    time that is their sum."""
    rows = []
    for (name, stage), phases in jobs.items():
        rows += [(name, stage, f"phase_{p}_s", v) for p, v in phases.items()]
        rows.append((name, stage, "stage_wall_s", round(sum(phases.values()), 3)))
    return rows


@pytest.mark.plots
def test_time_breakdown_draws_each_jobs_recorded_phases(tmp_path):
    """One stacked bar per fine-tune and evaluate job (the base model's evaluation too), each segment as tall as the
    phase the job recorded; every phase has one look in the bars and the legend (work in the experiment's colour),
    and the legend gives each phase's seconds over all the jobs."""
    names = [f"e{i}" for i in range(5)]
    jobs = {}
    for i, name in enumerate(["base", *names]):
        for stage in ("finetune", "evaluate"):
            if name == "base" and stage == "finetune":
                continue
            k = i + (0 if stage == "finetune" else 0.5)  # a different value for every job and phase
            jobs[name, stage] = dict(zip(PHASES, (3.1 + k, 2.2 + k / 2, 0.3 * k, 40.0 - 3 * k, 0.7 + k / 10, 1.3)))
    table = pd.DataFrame(columns=real_inputs()[0].columns)
    plot = plots.plot_time_breakdown(add_rows(table, phase_rows(jobs)), names, tmp_path)
    assert plot.missing == [] and not any("No phases recorded" in r for r in plot.remarks), plot.remarks
    expected = {f"{n} {st} {p}": v for (n, st), phases in jobs.items() for p, v in phases.items()}
    assert plot.heights == pytest.approx(expected)
    texts = svg_texts(tmp_path / "time_breakdown.svg")
    for (n, st), phases in jobs.items():  # each bar's total on top of it
        assert plots._seconds(sum(phases.values())) in texts, (n, st)
    for phase in PHASES:  # the legend's entries, with each phase's seconds over every job
        total = sum(phases[phase] for phases in jobs.values())
        assert f"{plots.PHASE_NAMES[phase]} {plots._seconds(total)}" in texts, phase
        assert set(plot.legend[phase]) == set(plot.parts[phase]), (phase, plot.legend[phase], plot.parts[phase])
    assert set(plot.legend["work"]) == {plot.drawn[n] for n in ["base", *names]}
    assert len({c for p in PHASES if p != "work" for c in plot.parts[p]} | set(plot.legend["work"])) == 5 + 6


@pytest.mark.plots
def test_time_breakdown_falls_back_to_the_older_figures(tmp_path):
    """A job whose figures predate the phases (the stored run) is still drawn: a fine-tune's load and save, its
    training time (a resumed run's last attempt's) as work and the rest of its wall as exit; an evaluation's load
    and scoring, the rest of the scorer's wall as exit; the plot says which jobs these are. A recorded exit is
    drawn as recorded, a missing one is the rest of the wall."""
    table = add_rows(real_inputs()[0], [("baseline", "finetune", "load_s", 6.5), ("baseline", "finetune", "save_s", 1.5)])
    wall = plots.value(table, "baseline", "finetune", "stage_wall_s")
    train = plots.value(table, "baseline", "finetune", "training_time_s")
    parts = plots.job_phases(table, "baseline", "finetune")
    assert parts == pytest.approx({"startup": 0, "load": 6.5, "warmup": 0, "work": train, "save": 1.5,
                                   "exit": wall - train - 8.0})
    resumed = add_rows(table, [("baseline", "finetune", "last_attempt_training_time_s", 100.0)])
    assert plots.job_phases(resumed, "baseline", "finetune")["work"] == 100.0
    assert plots.job_phases(resumed, "baseline", "finetune")["exit"] == pytest.approx(wall - 108.0)
    ev = {m: plots.value(table, "mbs16", "evaluate", m) for m in ("wall_s", "load_s", "score_s")}
    assert plots.job_phases(table, "mbs16", "evaluate") == pytest.approx(
        {"startup": 0, "load": ev["load_s"], "warmup": 0, "work": ev["score_s"], "save": 0,
         "exit": ev["wall_s"] - ev["load_s"] - ev["score_s"]})
    plot = plots.plot_time_breakdown(table, EXPERIMENTS, tmp_path)
    assert plot.missing == []
    assert any(r.startswith("No phases recorded by baseline fine-tune, mbs16 fine-tune, base evaluate") for r in
               plot.remarks), plot.remarks
    assert plot.heights["baseline finetune work"] == train and f"{wall:.0f} s" in svg_texts(tmp_path / "time_breakdown.svg")
    # a job with phases: exit as recorded, or the rest of its wall where it is null
    given = {"startup": 2.0, "load": 3.0, "warmup": 0.0, "work": 10.0, "save": 1.0, "exit": 4.0}
    recorded = add_rows(table, phase_rows({("mbs16", "finetune"): given}))
    assert plots.job_phases(recorded, "mbs16", "finetune") == pytest.approx(given)
    no_exit = add_rows(table, [r for r in phase_rows({("mbs16", "finetune"): given}) if r[2] != "phase_exit_s"]
                       + [("mbs16", "finetune", "stage_wall_s", 30.0)])
    assert plots.job_phases(no_exit, "mbs16", "finetune")["exit"] == pytest.approx(14.0)
    # phases that add up to more than the job's wall (they overlap) are drawn as recorded, and said
    overlapping = add_rows(recorded, [("mbs16", "finetune", "stage_wall_s", 15.0)])
    plot = plots.plot_time_breakdown(overlapping, EXPERIMENTS, tmp_path)
    assert plot.heights["mbs16 finetune load"] == 3.0
    assert "Phases add up to more than the job's wall: mbs16 fine-tune 20 s over a 15 s wall" in plot.remarks
    # a job not run yet is said, not drawn
    plot = plots.plot_time_breakdown(table, [*EXPERIMENTS, "later"], tmp_path)
    assert plot.missing == ["later fine-tune (no timings yet)", "later evaluate (no timings yet)"]


def test_accuracy_against_samples_per_second_uses_its_axis_and_names_do_not_touch(tmp_path):
    """The points span much of the x axis (it no longer starts at 0 with the points in its right half; a tenth of
    the largest value is kept either side, so a small difference is not blown up to fill it), and two methods at
    almost the same speed and accuracy get names that neither overlap nor touch."""
    table = with_samples_per_s(real_inputs()[0])
    plot = plots.plot_accuracy_samples(table, EXPERIMENTS, tmp_path)
    xs = [plots.value(table, e, "finetune", "samples_per_s") for e in EXPERIMENTS]
    assert (max(xs) - min(xs)) / (plot.xlim[1] - plot.xlim[0]) > 0.4 and plot.xlim[0] > 0, plot.xlim
    close = add_rows(table, [("mbs16", "finetune", "samples_per_s", min(xs) * 1.04),
                             ("mbs16", "evaluate", "acc", plots.value(table, "baseline", "evaluate", "acc") - 0.004)])
    plot = plots.plot_accuracy_samples(close, EXPERIMENTS, tmp_path)
    assert plot.crowded == []
    (a0, b0, a1, b1), (c0, d0, c1, d1) = plot.boxes.values()
    gap = max(c0 - a1, a0 - c1, d0 - b1, b0 - d1)  # > 0: apart along some axis
    assert gap >= 2, plot.boxes


@pytest.mark.plots
def test_accuracy_bars_are_labelled_as_the_slides_table_shows_them(tmp_path):
    """Each bar's label is the accuracy as the slide's table beside it writes it (a percentage with one decimal),
    and the axis is in percent too: 0.14 over a table's 13.5 %, or 0.33 over both 33.3 % and 32.8 % (hiding the
    drop the slide is about), read as two different numbers."""
    table, _ = real_inputs()
    plots.plot_eval_accuracy(table, EXPERIMENTS, tmp_path)
    texts = svg_texts(tmp_path / "eval_accuracy.svg")
    for name in ["base", *EXPERIMENTS]:
        for metric in ("acc", "acc_norm"):
            assert f"{plots.value(table, name, 'evaluate', metric) * 100:.1f}%" in texts, (name, metric, texts)
    assert not any(re.fullmatch(r"0\.\d\d", s) for s in texts), texts  # no fraction labels left on the bars
    assert "50%" in texts and "accuracy" in texts, texts  # the axis's ticks in percent
    # and the two accuracy scatters beside their tables (13.5 %, 33.3 %) count in percent too, not 0.10 to 0.40
    plots.plot_eval_tradeoff(table, EXPERIMENTS, 0.05, tmp_path)
    plots.plot_accuracy_samples(with_samples_per_s(table), EXPERIMENTS, tmp_path)
    for name in ("eval_tradeoff", "accuracy_samples"):
        ticks = svg_texts(tmp_path / f"{name}.svg")
        assert "30%" in ticks and not any(re.fullmatch(r"0\.\d0", s) for s in ticks), (name, ticks)


def test_tolerance_band_is_one_sided_below_the_baseline_accuracy(tmp_path):
    """The rule is "at most X pp below the baseline": the allowed region starts at that floor and has no ceiling."""
    table, _ = real_inputs()
    acc = plots.value(table, "baseline", "evaluate", "acc")
    plot = plots.plot_eval_tradeoff(table, EXPERIMENTS, 0.02, tmp_path)
    assert plot.labels["band"] == f"acc >= {acc - 0.02:.4f}"
    texts = svg_texts(tmp_path / "eval_tradeoff.svg")
    assert "allowed: at most 2 pp below baseline" in texts
    assert not any("±" in s for s in texts), texts
    plot = plots.plot_eval_tradeoff(table[table["experiment"] != "baseline"], EXPERIMENTS, 0.02, tmp_path)
    assert "band" not in plot.labels and any("tolerance band" in m for m in plot.missing)


def label_boxes(svg) -> dict[str, tuple[float, float]]:
    """Where each point's name was drawn in the SVG: the text's anchor (x, y) in SVG pixels."""
    out = {}
    for node in ET.parse(svg).getroot().iter(f"{SVG}text"):
        text = "".join(node.itertext()).strip()
        if text in ("base", *EXPERIMENTS) and node.get("x"):
            out[text] = (float(node.get("x")), float(node.get("y")))
    return out


def test_point_names_do_not_cover_other_points(tmp_path):
    """Two experiments scored at almost the same wall time and accuracy (the usual case: evaluation does not depend
    on how the fine-tune ran): each name goes beside its own point, not over the other one."""
    table, _ = real_inputs()
    for name, metric, v in (("mbs16", "wall_s", 33.2), ("mbs16", "acc", 0.372), ("base", "wall_s", 32.0)):
        table.loc[(table["experiment"] == name) & (table["stage"] == "evaluate") & (table["metric"] == metric),
                  "value"] = str(v)
    plot = plots.plot_eval_tradeoff(table, EXPERIMENTS, 0.05, tmp_path)
    assert plot.crowded == []
    names = label_boxes(tmp_path / "eval_tradeoff.svg")
    assert set(names) == {"base", *EXPERIMENTS}
    # the two names are on different sides of the pair of points (the one placed first, right of its point)
    assert names["baseline"][0] < names["mbs16"][0]
    # and the real run's points are labelled without overlap too
    assert plots.plot_eval_tradeoff(real_inputs()[0], EXPERIMENTS, 0.05, tmp_path).crowded == []


def test_accuracy_against_samples_per_second_one_labelled_point_per_method(tmp_path):
    table = with_samples_per_s(real_inputs()[0])
    table = add_rows(table, [("dora", "finetune", "samples_per_s", 0.5), ("dora", "evaluate", "acc", 0.41),
                             ("dora", "finetune", "method", "dora"), ("low-memory", "finetune", "samples_per_s", 0.3),
                             ("low-memory", "evaluate", "acc", 0.39), ("low-memory", "finetune", "method", "qlora")])
    experiments = [*EXPERIMENTS, "dora", "low-memory"]
    plot = plots.plot_accuracy_samples(table, experiments, tmp_path)
    assert set(plot.drawn) == set(experiments) and plot.missing == [] and plot.crowded == []
    texts = svg_texts(tmp_path / "accuracy_samples.svg")
    # labelled with the method where the name does not say it already
    assert {"baseline (full)", "mbs16 (full)", "dora", "low-memory (qlora)"} <= set(texts)
    assert "base model (not fine-tuned)" in texts


def test_accuracy_against_samples_per_second_needs_two_experiments_with_both(tmp_path):
    table = with_samples_per_s(real_inputs()[0])
    one = table[~((table["experiment"] == "mbs16") & (table["metric"] == "samples_per_s"))]
    plot = plots.plot_accuracy_samples(one, EXPERIMENTS, tmp_path)
    assert plot.drawn == {} and plot.missing == ["mbs16 (no samples/s yet)"]
    assert "Accuracy against samples/s needs two experiments with both figures" in svg_texts(
        tmp_path / "accuracy_samples.svg")


@pytest.mark.plots
def test_same_inputs_give_the_same_files(tmp_path):
    table, metrics = real_inputs()
    first = plots.plot_loss(table, metrics, EXPERIMENTS, tmp_path / "a").files
    second = plots.plot_loss(table, metrics, EXPERIMENTS, tmp_path / "b").files
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name


@pytest.mark.snakemake
def test_plots_rule_and_snakemake_report(tmp_path):
    """The real rule in a copy of the workflow, on the stored inputs (only the plots rule may run), then
    `snakemake --report`: every plot is in it, in its category, with its caption."""
    repo = copy_repo(tmp_path / "repo")
    snakefile = repo / "Snakefile"
    if 'include: "workflow/rules/plots.smk"' not in snakefile.read_text():  # until the Snakefile includes it
        snakefile.write_text(snakefile.read_text() + '\ninclude: "workflow/rules/plots.smk"\n')
    results = repo / "results"
    (results / "env").mkdir(parents=True)
    shutil.copy(DATA / "summary.csv", results / "summary.csv")
    shutil.copy(DATA / "manifest.json", results / "env/manifest.json")
    for e in EXPERIMENTS:
        (results / f"finetune/{e}").mkdir(parents=True)
        shutil.copy(DATA / f"metrics-{e}.csv", results / f"finetune/{e}/metrics.csv")
    targets = [f"results/plots/{n}.{ext}" for n in PLOT_NAMES for ext in ("png", "svg")]
    snakemake(repo, "--allowed-rules", "plots", "--cores", "1", *targets)
    assert sorted(p.name for p in (results / "plots").iterdir()) == sorted(Path(t).name for t in targets)
    log = (results / "logs/plots.log").read_text()
    assert "mbs16: 1.62×" in log  # the stored summary's speedup_vs_baseline: 133.8 s / 82.73 s of training

    snakemake(repo, "--allowed-rules", "plots", "--report", "report.html", *targets)
    html = (repo / "report.html").read_text()
    categories = json.loads(re.search(r"var categories = (\{.*?\});", html).group(1))
    assert sorted(categories["Fine-tune"]["Other"]) == [f"results/plots/{n}.png" for n in
                                                         ["loss", "memory", "throughput", "time_breakdown"]]
    assert sorted(categories["Evaluation"]["Other"]) == ["results/plots/accuracy_samples.png",
                                                          "results/plots/eval_accuracy.png",
                                                          "results/plots/eval_tradeoff.png"]
    for name in PLOT_NAMES:
        caption = (REPO / f"workflow/report/{name}.rst").read_text()
        first_words = " ".join(caption.split()[:8])
        assert first_words in " ".join(html.split()), f"caption of {name} not in the report"
    # the caption's template is filled from the config: the tolerance the band was drawn with
    assert "presentation.accuracy_tolerance</tt> = 0.05" in html


@pytest.mark.plots
def test_drawn_two_at_a_time_the_plots_are_the_same(tmp_path):
    """The plots stage draws in forked processes where it has two threads: same figures, same readings."""
    with_samples_per_s(real_inputs()[0]).to_csv(tmp_path / "summary.csv", index=False)
    made = {workers: plots.make_all(tmp_path / "summary.csv", real_inputs()[1], DATA / "manifest.json", EXPERIMENTS,
                                    0.05, tmp_path / f"plots{workers}", workers=workers) for workers in (1, 2)}
    assert list(made[2]) == list(PLOT_NAMES)
    for name in PLOT_NAMES:
        one, two = dataclasses.asdict(made[1][name]), dataclasses.asdict(made[2][name])
        assert [p.name for p in one.pop("files")] == [p.name for p in two.pop("files")]
        assert one == two, name
        assert (tmp_path / f"plots1/{name}.png").read_bytes() == (tmp_path / f"plots2/{name}.png").read_bytes()
