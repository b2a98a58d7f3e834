"""What every plot shares: one style sized for the plot's place on a slide, one colour per experiment, reading the summary
table, and saving PNG + SVG with no date in them (an unchanged input gives an unchanged file)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; a cluster's compute node has no display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from llmhpc.outputs.summary_table import PHASES, phase_sources  # noqa: E402
from llmhpc.settings import FinetuneSettings  # noqa: E402

CHANCE = 0.25  # HellaSwag: four endings per item

# Large type, and the shape of the box a slide gives its plot beside the text (deck.css: 60 % of the 1168 px
# content width by the 536 px under the header, about 1.27:1), so that the plot fills that box instead of leaving
# an empty band under it; readable from the back of the room.
STYLE = {
    "figure.figsize": (10, 7.8),
    "figure.dpi": 100,
    "savefig.dpi": 160,
    "font.size": 16,
    "axes.titlesize": 20,
    "axes.titleweight": "bold",
    "axes.labelsize": 17,
    "xtick.labelsize": 15,
    "ytick.labelsize": 15,
    "legend.fontsize": 14,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 2.5,
    "lines.markersize": 8,
    "svg.fonttype": "none",  # text stays text in the SVG: searchable, editable, and checkable by tests
    "svg.hashsalt": "llmhpc",  # stable ids, so an unchanged input gives an unchanged SVG
}
# Colour-blind-safe (Okabe-Ito) colours for experiments in config order; the base model is grey.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
BASE_COLOUR = "#8C8C8C"
NOTE_COLOUR = "#B00020"  # what is missing (an experiment not run yet): it stands out
REMARK_COLOUR = "#4B5563"  # how a figure was measured (a CPU run, a part counted elsewhere): read, not alarming


@contextmanager
def style():
    with matplotlib.rc_context(STYLE):
        yield


def colours(experiments: list[str]) -> dict[str, str]:
    """Colour of each model: experiments by their place in the config (baseline first), `base` grey."""
    out = {"base": BASE_COLOUR}
    for i, name in enumerate(experiments):
        out[name] = PALETTE[i % len(PALETTE)]
    return out


@dataclass
class Plot:
    """What a plot function drew: its files, what it could not draw and why, remarks on how something was
    measured, the texts written on the bars and the colour each model was drawn in (read back from the artists)."""

    name: str
    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    remarks: list[str] = field(default_factory=list)
    crowded: list[str] = field(default_factory=list)  # point names that could only be placed over something
    boxes: dict[str, tuple] = field(default_factory=dict)  # each point name's box as placed, in figure pixels
    labels: dict[str, str] = field(default_factory=dict)
    drawn: dict[str, str] = field(default_factory=dict)
    # the colours each legend entry shows, and those of what it stands for in the plot (read back from the artists)
    legend: dict[str, list[str]] = field(default_factory=dict)
    parts: dict[str, list[str]] = field(default_factory=dict)
    heights: dict[str, float] = field(default_factory=dict)  # each bar segment's height, read back from the artist
    xlim: tuple[float, float] | None = None  # the axes' data range as saved
    ylim: tuple[float, float] | None = None


def value(table: pd.DataFrame, experiment: str, stage: str, metric: str) -> float | None:
    """A number from the long summary table, or None where the row is absent or empty."""
    rows = table[(table["experiment"] == experiment) & (table["stage"] == stage) & (table["metric"] == metric)]
    if rows.empty:
        return None
    try:
        number = float(rows["value"].iloc[-1])
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def read_table(path) -> pd.DataFrame:
    # values are mixed (numbers, versions, paths): keep them as text and convert per metric
    return pd.read_csv(path, dtype={"value": str})


def _record(plot: Plot, model: str, artist) -> None:
    """Note the colour `model` was drawn in, from the artist itself (a line, a bar or a scatter)."""
    if isinstance(artist, Line2D):
        colour = artist.get_color()
    elif isinstance(artist, Rectangle):
        colour = artist.get_facecolor()
    else:
        colour = artist.get_facecolors()[0]
    plot.drawn.setdefault(model, to_hex(colour, keep_alpha=False))


def _footnotes(plot: Plot) -> list[tuple[str, str]]:
    """The lines under the axes: what is missing (red, it stands out), then remarks (grey, plain sentences)."""
    out = [("Missing: " + "; ".join(plot.missing), NOTE_COLOUR)] if plot.missing else []
    return out + [(r, REMARK_COLOUR) for r in plot.remarks]


def _note(ax, plot: Plot) -> None:
    """Say in the figure what is missing and how something was measured, under the axes."""
    y = 0.01
    for text, colour in reversed(_footnotes(plot)):
        ax.figure.text(0.01, y, text, color=colour, fontsize=13, ha="left", va="bottom", wrap=True)
        y += 0.045 * math.ceil(len(text) / 110)


def _empty(ax, message: str) -> None:
    """Nothing to draw: one message in place of the axes (and of any per-experiment "not run" marks)."""
    for text in list(ax.texts):
        text.remove()
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=20, color=NOTE_COLOUR, wrap=True,
            transform=ax.transAxes)


def _layout(fig, plot: Plot) -> None:
    """Tight layout with room under the axes for the footnotes: about 110 characters a line at this size."""
    note_lines = sum(math.ceil(len(text) / 110) for text, _ in _footnotes(plot))
    fig.tight_layout(rect=(0, 0.045 * note_lines + (0.01 if note_lines else 0), 1, 1))


def _save(fig, plot: Plot, out_dir: Path, layout: bool = True) -> Plot:
    """layout False: the caller laid the figure out itself (a figure legend that tight layout does not see)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if layout:
        _layout(fig, plot)
    ax = fig.axes[0]
    plot.xlim, plot.ylim = tuple(map(float, ax.get_xlim())), tuple(map(float, ax.get_ylim()))
    for ext in ("png", "svg"):
        path = out_dir / f"{plot.name}.{ext}"
        # no creation date in the metadata: an unchanged input gives an unchanged file
        fig.savefig(path, metadata={"Date": None} if ext == "svg" else {"Software": None})
        plot.files.append(path)
    plt.close(fig)
    return plot


def _accumulation(table: pd.DataFrame, experiment: str) -> int | None:
    """Micro batches per optimizer step (LitGPT's gradient accumulation), from the summary table."""
    g = value(table, experiment, "finetune", "global_batch_size")
    m = value(table, experiment, "finetune", "micro_batch_size")
    w = value(table, experiment, "finetune", "world_size")
    if not (g and m and w):
        return None
    return max(1, FinetuneSettings.from_dict(
        {"global_batch_size": int(g), "micro_batch_size": int(m), "devices": int(w)}).accumulation)


def _bar_axis(ax, names: list[str]) -> None:
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.6, len(names) - 0.4)  # fixed, so that labels placed at the right edge stay inside
    ax.grid(axis="x", visible=False)


# How each phase other than the work is drawn, the same in every bar and in the legend: greys told apart by their
# hatching, so that the work keeps its experiment's colour and stands out as the one coloured part of a bar.
PHASE_STYLE = {"startup": ("#5A5A5A", None), "load": ("#A3A3A3", "xx"), "warmup": ("#C9C9C9", "\\\\"),
               "save": ("#7A7A7A", ".."), "exit": ("#E3E3E3", None)}


def job_phases(table: pd.DataFrame, experiment: str, stage: str) -> dict[str, float] | None:
    """Seconds of each phase (charts.PHASES) of one job (`stage`: finetune or evaluate), from the summary table;
    a phase not recorded is 0 and exit the rest of the wall where the job did not record it. None: no wall yet."""
    has = lambda e, s, m: value(table, e, s, m) is not None  # noqa: E731
    wall_metric, sources, _ = phase_sources(has, experiment, stage)
    if wall_metric is None:
        return None
    parts = {p: value(table, experiment, stage, m) if m else 0.0 for p, m in sources.items() if p != "exit"}
    wall = value(table, experiment, stage, wall_metric)
    parts["exit"] = (value(table, experiment, stage, sources["exit"]) if sources["exit"]
                     else max(0.0, wall - sum(parts.values())))
    return {p: max(0.0, parts[p]) for p in PHASES}


def _phase_style(phase: str, colour: str) -> dict:
    """How a phase of a time bar is drawn, the same in the bars and in the legend's swatches."""
    face, hatch = (colour, None) if phase == "work" else PHASE_STYLE[phase]
    return {"facecolor": face, "hatch": hatch, "edgecolor": "white", "linewidth": 0.8}


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


# Where a point's name may go, in points from the point: right, left, above, below and the diagonals.
LABEL_PLACES = [((11, 7), "left", "bottom"), ((11, -7), "left", "top"), ((-11, 7), "right", "bottom"),
                ((-11, -7), "right", "top"), ((0, 13), "center", "bottom"), ((0, -13), "center", "top"),
                ((16, 0), "left", "center"), ((-16, 0), "right", "center")]


LABEL_MARGIN = 4  # pixels kept clear around a name: names that merely touch read as one label


def label_points(ax, points: dict[str, tuple[float, float]], marker_area: float, fontsize=16,
                 boxes: dict | None = None) -> list[str]:
    """Name each scattered point beside it, on the first side where the name covers no point, comes no nearer
    than LABEL_MARGIN to another name and stays inside the axes (points that share a place get their names on
    different sides). Returns the names that could not be placed without overlap (then they go where they
    overlap least); `boxes` gets each name's box."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    radius = (marker_area ** 0.5) / 2 * fig.dpi / 72 + 2  # scatter's s is the marker's area in points²
    dots = [ax.transData.transform(xy) for xy in points.values()]
    dot_boxes = [(x - radius, y - radius, x + radius, y + radius) for x, y in dots]
    frame = ax.get_window_extent(renderer)
    legend = ax.get_legend()
    placed, crowded = ([tuple(legend.get_window_extent(renderer).extents)] if legend else []), []

    def overlap(a, b):
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    def gap(box, xy):  # from a point to a box, in pixels
        return math.hypot(max(box[0] - xy[0], 0, xy[0] - box[2]), max(box[1] - xy[1], 0, xy[1] - box[3]))

    for i, (name, xy) in enumerate(points.items()):
        tried = []
        for j, (offset, ha, va) in enumerate(LABEL_PLACES):
            text = ax.annotate(name, xy, xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=fontsize)
            e = text.get_window_extent(renderer)
            box = (e.x0, e.y0, e.x1, e.y1)
            clear = (e.x0 - LABEL_MARGIN, e.y0 - LABEL_MARGIN, e.x1 + LABEL_MARGIN, e.y1 + LABEL_MARGIN)
            outside = e.x0 < frame.x0 or e.x1 > frame.x1 or e.y0 < frame.y0 or e.y1 > frame.y1
            cost = (sum(overlap(box, d) for d in dot_boxes) + sum(overlap(clear, p) for p in placed)
                    + (1e6 if outside else 0))
            # a name nearer another point than its own reads as that point's name
            ambiguous = any(gap(box, d) < gap(box, dots[i]) for k, d in enumerate(dots) if k != i)
            tried.append(((cost, ambiguous, j), text, box))
        (cost, _, _), text, box = min(tried, key=lambda c: c[0])
        for _, other, _ in tried:
            if other is not text:
                other.remove()
        placed.append(box)
        if boxes is not None:
            boxes[name] = tuple(text.get_window_extent(renderer).extents)
        if cost > 0:
            crowded.append(name)
    return crowded


def text(table: pd.DataFrame, experiment: str, stage: str, metric: str) -> str | None:
    """A text cell of the long summary table (a method, an engine), or None where the row is absent or empty."""
    rows = table[(table["experiment"] == experiment) & (table["stage"] == stage) & (table["metric"] == metric)]
    cell = rows["value"].iloc[-1] if not rows.empty else None
    return None if cell is None or (isinstance(cell, float) and math.isnan(cell)) or cell == "" else str(cell)


def accuracy_scatter(fig, ax, plot: Plot, points: dict[str, tuple[float, float]], models: dict[str, str],
                     palette: dict[str, str], xlabel: str, ylabel: str, floor: float | None = None) -> None:
    """Points {label: (x, accuracy)}: one dot each in the colour of its experiment (models[label], recorded for
    the slides), x around the points (they span most of the axis unless they differ by little, with room for
    their names; never below 0),
    y around the accuracies and a drawn `floor` line (then a legend), and each point's name placed where it
    covers no other point and no other name."""
    for label, (x, acc) in points.items():
        dot = ax.scatter([x], [acc], s=220, color=palette[models[label]], edgecolor="black", zorder=3)
        _record(plot, models[label], dot)
    accs = [a for _, a in points.values()] + ([floor] if floor is not None else [])
    xs = [x for x, _ in points.values()]
    # at least a tenth of the largest value either side, so that a 2 % difference does not fill the axis
    pad = max(0.35 * (max(xs) - min(xs)), 0.1 * max(xs)) or 1.0
    ax.set_xlim(max(0.0, min(xs) - pad), max(xs) + pad)
    ax.set_ylim(max(0.0, min(accs) - 0.05), min(1.0, max(accs) + 0.08))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))  # as the slides' tables write accuracy
    if floor is not None:
        ax.legend(loc="lower right")
    _layout(fig, plot)  # the layout the names are placed in (saving keeps it)
    plot.crowded = label_points(ax, points, marker_area=220, boxes=plot.boxes)


def plot_accuracy_samples(table: pd.DataFrame, experiments: list[str], out_dir) -> Plot:
    """Accuracy after fine-tuning (the evaluate stage's acc) against training samples/s (the ISC25 score), one
    labelled point per experiment: the speed/accuracy trade-off between methods as a measured figure. Drawn where
    at least two experiments have both figures; otherwise the figure says what is missing."""
    plot = Plot("accuracy_samples")
    palette = colours(experiments)
    points, labels = {}, {}
    for name in experiments:
        acc, speed = value(table, name, "evaluate", "acc"), value(table, name, "finetune", "samples_per_s")
        if acc is None or speed is None:
            plot.missing.append(f"{name} ({'no samples/s' if speed is None else 'not scored'} yet)")
            continue
        method = text(table, name, "finetune", "method")
        label = name if not method or method in name else f"{name} ({method})"
        points[label], labels[label] = (speed, acc), name
    with style():
        fig, ax = plt.subplots()
        if len(points) >= 2:
            base = value(table, "base", "evaluate", "acc")
            if base is not None:
                ax.axhline(base, color=BASE_COLOUR, linestyle="--", linewidth=2, label="base model (not fine-tuned)")
            accuracy_scatter(fig, ax, plot, points, labels, palette,
                             "training samples/s (samples trained / training time)",
                             "accuracy after fine-tuning (acc)", floor=base)
        else:
            _empty(ax, "Accuracy against samples/s needs two experiments with both figures")
        ax.set_title("Accuracy against training samples/s")
        _note(ax, plot)
        return _save(fig, plot, out_dir)
