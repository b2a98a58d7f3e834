"""The plots stage: the figures people look at (and the slides show), drawn from the summary table, each
experiment's metrics.csv and the environment manifest. One style for all of them, sized for their box on a slide; an
experiment keeps its colour in every plot. A plot whose data is missing is still written, and says in the
figure what is missing, so that a half-finished campaign still gets its slides."""

from __future__ import annotations

import json
import operator
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; a cluster's compute node has no display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.legend_handler import HandlerTuple  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from llmhpc.outputs.charts import (  # noqa: E402
    CHANCE,
    NOTE_COLOUR,
    Plot,
    _accumulation,
    _bar_axis,
    _empty,
    _layout,
    _note,
    _phase_style,
    _record,
    _save,
    _seconds,
    accuracy_scatter,
    colours,
    job_phases,
    plot_accuracy_samples,
    read_table,
    style,
    value,
)
from llmhpc.outputs.summary_table import COLUMNS, JOB_STAGES, PHASE_NAMES, PHASES, phase_sources  # noqa: E402


def plot_loss(table: pd.DataFrame, metrics: dict[str, Path | None], experiments: list[str], out_dir) -> Plot:
    """Training loss (lines) and validation loss (dashed, dots) per experiment against the optimizer step."""
    plot = Plot("loss")
    palette = colours(experiments)
    with style():
        fig, ax = plt.subplots()
        in_steps = True
        curves = {}
        for name in experiments:
            path = metrics.get(name)
            if not path or not Path(path).is_file():
                plot.missing.append(f"{name} (no metrics.csv yet)")
                continue
            rows = pd.read_csv(path)
            acc = _accumulation(table, name)
            if acc is None:
                in_steps = False
            curves[name] = (rows, acc or 1)
        for name, (rows, acc) in curves.items():
            # litgpt logs train rows per iteration; Lightning's CSV logger writes the iteration into "step"
            # (also on validation rows, which have no "iter"): an optimizer step is `acc` iterations
            train = rows[rows["loss"].notna()] if "loss" in rows else rows.iloc[0:0]
            x_scale = acc if in_steps else 1
            (line,) = ax.plot(train["iter"] / x_scale, train["loss"], color=palette[name], label=f"{name} train")
            _record(plot, name, line)
            val = rows[rows["val_loss"].notna()] if "val_loss" in rows else rows.iloc[0:0]
            if val.empty:
                plot.missing.append(f"{name} (no validation loss logged)")
            else:
                ax.plot(val["step"] / x_scale, val["val_loss"], color=palette[name], linestyle="--", marker="o",
                        label=f"{name} validation")
        if curves:
            ax.set_xlabel("optimizer step" if in_steps else "iteration (micro batch)")
            ax.set_ylabel("loss (nats/token)")
            ax.legend(ncols=2 if len(curves) > 2 else 1)
        else:
            _empty(ax, "No training loss yet: no experiment has a metrics.csv")
        ax.set_title("Training and validation loss")
        _note(ax, plot)
        return _save(fig, plot, out_dir)


def plot_throughput(table: pd.DataFrame, experiments: list[str], out_dir) -> Plot:
    """tokens/s per device per experiment, each bar labelled with its speedup over the first (baseline): the
    summary's speedup_vs_<baseline>, the ratio of training times, the one definition the slides use too (a ratio
    of tokens/s would differ: litgpt counts padding, and the experiments pad differently)."""
    plot = Plot("throughput")
    palette = colours(experiments)
    base_name = experiments[0]
    base = value(table, base_name, "finetune", "training_time_s")
    with style():
        fig, ax = plt.subplots()
        heights = {name: value(table, name, "finetune", "tokens_per_s_per_device") for name in experiments}
        top = max([h for h in heights.values() if h] or [1.0])
        for i, name in enumerate(experiments):
            h = heights[name]
            if h is None:
                plot.missing.append(f"{name} (no throughput yet)")
                ax.text(i, top * 0.05, "not run", ha="center", va="bottom", color=NOTE_COLOUR, rotation=90)
                continue
            (bar,) = ax.bar(i, h, color=palette[name], width=0.6)
            _record(plot, name, bar)
            speedup = value(table, name, "finetune", f"speedup_vs_{base_name}")
            if speedup is not None:
                label = f"{speedup:.2f}×"  # the deck's one ratio format
                plot.labels[name] = label
                ax.text(i, h, label, ha="center", va="bottom", fontsize=18, fontweight="bold")
            ax.text(i, h / 2, f"{h:,.0f}", ha="center", va="center", color="white", fontsize=15)
        if base is None:
            plot.missing.append(f"no speedups: {base_name} (the baseline) has no training time")
        if any(heights.values()):
            _bar_axis(ax, experiments)
            ax.set_ylim(0, top * 1.15)
            ax.set_ylabel("tokens/s per device")
        else:
            _empty(ax, "No throughput yet: no experiment has been fine-tuned")
        ax.set_title(f"Tokens/s per device, and speedup over {base_name}")
        plot.remarks.append(f"Speedup: {base_name}'s training time over the experiment's, as on the slides")
        _note(ax, plot)
        return _save(fig, plot, out_dir)


def plot_time_breakdown(table: pd.DataFrame, experiments: list[str], out_dir) -> Plot:
    """One stacked bar per job, fine-tune jobs left and evaluate jobs (the base model's first) right, each panel on
    its own scale (a fine-tune of minutes would flatten scoring of seconds): start-up, load, warm-up, work, save and
    exit, as each job recorded them. Work is in the experiment's colour, the other phases in hatched greys, the same
    in the bars and in the legend, whose entries give each phase's seconds over all the jobs, so that a phase too
    thin to see is still named with its time."""
    plot = Plot("time_breakdown")
    palette = colours(experiments)
    jobs = {"finetune": list(experiments), "evaluate": ["base", *experiments]}
    phases = {(stage, n): job_phases(table, n, stage) for stage, names in jobs.items() for n in names}
    totals = dict.fromkeys(PHASES, 0.0)
    fallback, over = [], []
    has = lambda e, s, m: value(table, e, s, m) is not None  # noqa: E731
    with style():
        fig, axes = plt.subplots(1, 2, width_ratios=[len(jobs["finetune"]) + 0.5, len(jobs["evaluate"]) + 0.5])
        for ax, (stage, names) in zip(axes, jobs.items()):
            top = max([sum(phases[stage, n].values()) for n in names if phases[stage, n]] or [0]) or 1.0
            for i, name in enumerate(names):
                parts = phases[stage, name]
                if parts is None:
                    plot.missing.append(f"{name} {JOB_STAGES[stage]} (no timings yet)")
                    ax.text(i, top * 0.05, "not run", ha="center", va="bottom", color=NOTE_COLOUR, rotation=90)
                    continue
                if not phase_sources(has, name, stage)[2]:
                    fallback.append(f"{name} {JOB_STAGES[stage]}")
                bottom = 0.0
                for phase in PHASES:
                    seconds = parts[phase]
                    totals[phase] += seconds
                    (bar,) = ax.bar(i, seconds, bottom=bottom, width=0.7, **_phase_style(phase, palette[name]))
                    plot.heights[f"{name} {stage} {phase}"] = float(bar.get_height())
                    if phase == "work":
                        _record(plot, name, bar)
                    if seconds > 0:
                        plot.parts.setdefault(phase, []).append(to_hex(bar.get_facecolor(), keep_alpha=False))
                        plot.labels[f"{name} {stage} {phase}"] = _seconds(seconds)
                        if seconds >= 0.08 * top:
                            ax.text(i, bottom + seconds / 2, _seconds(seconds), ha="center", va="center", fontsize=12,
                                    color="white" if phase in ("work", "startup", "save") else "black")
                    bottom += seconds
                ax.text(i, bottom, _seconds(bottom), ha="center", va="bottom", fontsize=13, fontweight="bold")
                wall = value(table, name, stage, phase_sources(has, name, stage)[0])
                if bottom > wall + 1:  # phases that overlap, or a wall measured over less than they were
                    over.append(f"{name} {JOB_STAGES[stage]} {_seconds(bottom)} over a {_seconds(wall)} wall")
            ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 4 else 0,
                          ha="right" if len(names) > 4 else "center")
            ax.set_xlim(-0.6, len(names) - 0.4)
            ax.grid(axis="x", visible=False)
            ax.set_ylim(0, top * 1.12)
            ax.set_title(f"{JOB_STAGES[stage]} jobs", fontsize=16)
        axes[0].set_ylabel("seconds of the job's wall")
        if any(phases.values()):
            drawn = [n for n in ["base", *experiments] if any(phases.get((s, n)) for s in jobs)]
            handles, names = [], []
            for phase in PHASES:
                swatches = tuple(Patch(**_phase_style(phase, palette[n])) for n in
                                 (drawn if phase == "work" else drawn[:1]))
                plot.legend[phase] = [to_hex(p.get_facecolor(), keep_alpha=False) for p in swatches]
                handles.append(swatches)
                names.append(f"{PHASE_NAMES[phase]} {_seconds(totals[phase])}")
            fig.legend(handles, names, handler_map={tuple: HandlerTuple(ndivide=None, pad=0)}, ncols=3,
                       loc="upper center", bbox_to_anchor=(0.5, 1 - 0.45 / fig.get_figheight()), fontsize=14,
                       handlelength=2.4, columnspacing=2.0)
            plot.remarks.append("Legend: each phase's seconds over all the jobs shown")
        else:
            for ax in axes:
                ax.set_xticks([])
            _empty(axes[0], "No timings yet: no job has run")
        if fallback:
            plot.remarks.append("No phases recorded by " + ", ".join(fallback)
                                + ": start-up counted in load, exit is the rest of the wall")
        if over:
            plot.remarks.append("Phases add up to more than the job's wall: " + "; ".join(over))
        fig.suptitle("Where each job's time goes", fontsize=20, fontweight="bold")
        _note(axes[0], plot)
        _layout(fig, plot)
        # room under the title for the legend (tight layout does not see a figure legend), in inches
        fig.subplots_adjust(top=1 - 1.75 / fig.get_figheight())
        return _save(fig, plot, out_dir, layout=False)


def capacity(manifest: dict | None) -> dict:
    """The memory the peaks are measured against: {"gpu": (GB, label)} and/or {"host": (GB, label)}."""
    out = {}
    if not manifest:
        return out
    gpus = manifest.get("gpus") or []
    if gpus and gpus[0].get("memory_gb"):
        out["gpu"] = (float(gpus[0]["memory_gb"]), f"{gpus[0].get('name', 'GPU')} memory")
    if manifest.get("host_memory_gb"):
        out["host"] = (float(manifest["host_memory_gb"]), f"host RAM ({manifest.get('host', 'host')})")
    return out


def plot_memory(table: pd.DataFrame, experiments: list[str], manifest: dict | None, out_dir) -> Plot:
    """Peak memory per experiment (GPU where litgpt reported it, else the host's peak RSS, hatched) against
    the device's capacity from the environment manifest."""
    plot = Plot("memory")
    palette = colours(experiments)
    caps = capacity(manifest)
    with style():
        fig, ax = plt.subplots()
        kinds = set()
        peaks = {}
        for name in experiments:
            gpu = value(table, name, "finetune", "peak_memory_gb")
            host = value(table, name, "finetune", "peak_host_memory_gb")
            if gpu is not None:
                peaks[name] = (gpu, "gpu")
            elif host is not None:
                peaks[name] = (host, "host")
        predicted = {name: value(table, name, "finetune", "predicted_memory_gb") for name in peaks
                     if peaks[name][1] == "gpu"}  # the fsdp2 engine's estimate (llmhpc.train.memory)
        predicted = {name: gb for name, gb in predicted.items() if gb is not None}
        highest = max([p for p, _ in peaks.values()] + list(predicted.values()) + [0.0])
        # a capacity far above every bar (a laptop's RAM against a tiny model) is written, not drawn: its line
        # would squash the bars into the bottom of the plot
        off_scale = {k for k, (c, _) in caps.items() if highest and c > 3 * highest}
        top = max([highest] + [c for k, (c, _) in caps.items() if c and k not in off_scale] + [1.0 if not highest else 0])
        for i, name in enumerate(experiments):
            if name not in peaks:
                plot.missing.append(f"{name} (no memory figure yet)")
                ax.text(i, top * 0.05, "not run", ha="center", va="bottom", color=NOTE_COLOUR, rotation=90)
                continue
            peak, kind = peaks[name]
            kinds.add(kind)
            (bar,) = ax.bar(i, peak, color=palette[name], width=0.6, hatch="//" if kind == "host" else None,
                            edgecolor="white")
            _record(plot, name, bar)
            ax.text(i, peak, f"{peak:.1f} GB", ha="center", va="bottom", fontsize=16)
            if name in predicted:
                ax.plot([i - 0.3, i + 0.3], [predicted[name]] * 2, color="black", linewidth=3,
                        label="predicted by the engine" if name == next(iter(predicted)) else None)
        if predicted:
            ax.legend(loc="upper left", fontsize=14)
        for kind in sorted(kinds):
            if kind in off_scale:
                gb, label = caps[kind]
                ax.text(len(experiments) - 0.45, top * 1.32, f"{label}: {gb:.0f} GB, far above these bars",
                        ha="right", va="top", fontsize=15)
            elif kind in caps:
                gb, label = caps[kind]
                ax.axhline(gb, color="black", linestyle="--", linewidth=2)
                ax.text(len(experiments) - 0.45, gb, f"{label}: {gb:.0f} GB", ha="right", va="bottom", fontsize=15)
            else:
                what = "GPU memory" if kind == "gpu" else "Host RAM"
                plot.remarks.append(f"{what}: capacity not in the environment manifest, so no line for it")
        if "host" in kinds:
            gpu_run = bool(manifest and manifest.get("gpus"))
            plot.remarks.append(("GPU memory: not reported for some runs" if gpu_run else
                                 "GPU memory: not measured on a CPU run") + "; hatched bars are the host's peak RSS")
        if peaks:
            _bar_axis(ax, experiments)
            ax.set_ylim(0, top * (1.35 if kinds & off_scale else 1.15))
            ax.set_ylabel("peak memory (GB)")
        else:
            _empty(ax, "No memory figures yet: no experiment has been fine-tuned")
        ax.set_title("Peak memory per experiment" + (" (GPU)" if kinds == {"gpu"} else " (host RSS)"
                                                      if kinds == {"host"} else ""))
        _note(ax, plot)
        return _save(fig, plot, out_dir)


def plot_eval_accuracy(table: pd.DataFrame, experiments: list[str], out_dir, random_base: bool = False) -> Plot:
    """acc (solid) and acc_norm (hatched) of the base model and every fine-tune, with chance as a line;
    random_base: the base model has random weights (model.source tiny), said under its bars."""
    plot = Plot("eval_accuracy")
    models = ["base", *experiments]
    palette = colours(experiments)
    with style():
        fig, ax = plt.subplots()
        drawn = False
        for i, name in enumerate(models):
            scores = {m: value(table, name, "evaluate", m) for m in ("acc", "acc_norm")}
            if all(v is None for v in scores.values()):
                plot.missing.append(f"{name} (not scored yet)")
                ax.text(i, 0.02, "not scored", ha="center", va="bottom", color=NOTE_COLOUR, rotation=90)
                continue
            for offset, (metric, score) in zip((-0.2, 0.2), scores.items()):
                if score is None:
                    plot.missing.append(f"{name} {metric}")
                    continue
                (bar,) = ax.bar(i + offset, score, width=0.38, color=palette[name], edgecolor="white",
                                hatch="//" if metric == "acc_norm" else None)
                if metric == "acc":
                    _record(plot, name, bar)
                # as the slide's table writes it (FORMATS' fraction: a percentage, one decimal)
                # (smaller where many models share the width, so that neighbouring bars' labels do not touch)
                ax.text(i + offset, score, f"{score * 100:.1f}%", ha="center", va="bottom",
                        fontsize=max(7, min(13, 70 // len(models))))
                drawn = True
        if drawn:
            chance = ax.axhline(CHANCE, color="black", linestyle="--", linewidth=2, label="chance (1/4)")
            _bar_axis(ax, ["base (random weights)" if random_base else "base", *experiments])
            ax.set_ylim(0, min(1.0, max(0.5, ax.get_ylim()[1] * 1.2)))
            ax.set_ylabel("accuracy")
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
            ax.legend(handles=[Patch(facecolor="#666666", label="acc"),
                               Patch(facecolor="#666666", hatch="//", edgecolor="white", label="acc_norm"), chance],
                      loc="upper left", ncols=3)
        else:
            _empty(ax, "No accuracy yet: no model has been scored")
        ax.set_title("HellaSwag-style accuracy: base and fine-tuned")
        _note(ax, plot)
        return _save(fig, plot, out_dir)


def plot_eval_tradeoff(table: pd.DataFrame, experiments: list[str], tolerance: float, out_dir) -> Plot:
    """Accuracy against inference wall time, one point per scored model. The rule is one-sided (an experiment's
    acc may be at most `tolerance` below the baseline experiment's): the allowed region is shaded from that floor
    up, with the floor as a dashed line. Each point's name goes where it covers no other point."""
    plot = Plot("eval_tradeoff")
    models = ["base", *experiments]
    baseline = experiments[0]
    palette = colours(experiments)
    with style():
        fig, ax = plt.subplots()
        points = {}
        for name in models:
            acc, wall = value(table, name, "evaluate", "acc"), value(table, name, "evaluate", "wall_s")
            if acc is None or wall is None:
                plot.missing.append(f"{name} (not scored yet)")
            else:
                points[name] = (wall, acc)
        ref = points.get(baseline)
        if ref:
            lo = ref[1] - tolerance
            ax.axhspan(lo, 1.0, color=palette[baseline], alpha=0.12, linewidth=0,
                       label=f"allowed: at most {tolerance * 100:g} pp below {baseline}")
            ax.axhline(lo, color=palette[baseline], linestyle="--", linewidth=2)
            plot.labels["band"] = f"acc >= {lo:.4f}"
        else:
            plot.missing.append(f"tolerance band: {baseline} has no accuracy yet")
        if points:
            items = {value(table, name, "evaluate", "items") for name in points}
            accuracy_scatter(fig, ax, plot, points, {name: name for name in points}, palette,
                             "inference wall time (s" + (f", {items.pop():.0f} items)" if len(items) == 1 else ")"),
                             "accuracy (acc)", floor=lo if ref else None)
        else:
            _empty(ax, "No inference results yet")
        ax.set_title("Accuracy against inference time")
        _note(ax, plot)
        return _save(fig, plot, out_dir)


def make_all(summary_csv, metrics: dict[str, Path | None], manifest_path, experiments: list[str],
             tolerance: float, out_dir, model_source: str | None = None, workers: int = 1) -> dict[str, Plot]:
    """Every plot of the stage, from the files the rule names; missing files give missing-data plots.
    model_source: the config's model.source (tiny: the base model has random weights, and the plots say so).
    workers > 1: the plots are drawn by that many forked processes at once (each figure is drawn and written by
    one process alone; matplotlib's drawing holds the GIL, so threads would not help): 6 s to 3 s on 2 cores."""
    table = read_table(summary_csv) if summary_csv and Path(summary_csv).is_file() else pd.DataFrame(columns=COLUMNS)
    manifest = json.loads(Path(manifest_path).read_text()) if manifest_path and Path(manifest_path).is_file() else None
    plots = [partial(plot_loss, table, metrics, experiments, out_dir), partial(plot_throughput, table, experiments, out_dir),
             partial(plot_time_breakdown, table, experiments, out_dir),
             partial(plot_memory, table, experiments, manifest, out_dir),
             partial(plot_eval_accuracy, table, experiments, out_dir, random_base=model_source == "tiny"),
             partial(plot_eval_tradeoff, table, experiments, tolerance, out_dir),
             partial(plot_accuracy_samples, table, experiments, out_dir)]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if min(workers, len(plots)) <= 1:
        return {p.name: p for p in map(operator.call, plots)}
    import multiprocessing

    # fork: the children have the tables and matplotlib already; each returns its Plot (a dataclass) by pickle
    with multiprocessing.get_context("fork").Pool(min(workers, len(plots))) as pool:
        return {p.name: p for p in pool.map(operator.call, plots, chunksize=1)}
