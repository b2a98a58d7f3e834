"""The interview slide deck: one slide model built from the measured summary, the environment manifest and the
config's `presentation` section, rendered as a self-contained HTML deck, a PDF and an editable PPTX.

No number on a slide is typed by hand. Every number is a `Figure`: it keeps the summary row (or manifest key, or
config key) it came from, the file that row names in its `source` column, and, for derived numbers (a difference,
a ratio), the figures it was computed from. Rich text is a list of segments, so that the renderers can show the
source of each number and a test can check that no digit on a slide comes from anywhere else.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shlex
import shutil
import subprocess
import tempfile
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from llmhpc.profiles import available as available_profiles
from llmhpc.summary import COLUMNS

NOT_MEASURED = "not measured yet"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
SUMMARY_FILE = "results/summary.csv"
MANIFEST_FILE = "results/env/manifest.json"

# How a number is shown, by the unit the summary table gives it: scale, decimals, suffix, signed.
FORMATS = {
    "s": (1, 1, " s", False),
    "tokens/s": (1, 0, " tokens/s", False),
    "items/s": (1, 1, " items/s", False),
    "GB": (1, 2, " GB", False),
    "fraction": (100, 1, "%", False),
    "pp": (100, 1, " pp", True),  # a change, in percentage points
    "pp_abs": (100, 1, " pp", False),
    "ratio": (1, 2, "×", False),
    "count": (1, 0, "", False),
    "samples": (1, 0, "", False),
    "nats": (1, 3, "", False),
    "TFLOP/s": (1, 1, " TFLOP/s", False),
}


@dataclass
class Figure:
    """One number (or version string) shown on a slide, and where it came from."""

    id: int
    text: str  # as shown, unit included
    value: float | str | None
    kind: str  # summary | manifest | config | derived
    ref: dict  # summary: experiment/stage/metric; manifest/config: key; derived: op and args (figure ids)
    source: str  # the file(s) it came from, as the summary's source column names them
    label: str  # what it is, in words
    scale: float = 1
    decimals: int | None = None  # None: shown verbatim (text)


@dataclass
class Slide:
    key: str
    title: str
    layout: str = "split"  # title | split (text and image) | text
    bullets: list = field(default_factory=list)  # each a list of segments {"text", "kind", ["fig"]}
    stats: list = field(default_factory=list)  # big-number cards: {"label", "value": segments}
    table: dict | None = None  # {"header": [str], "rows": [[segments]]}
    code: list = field(default_factory=list)  # shell commands, shown verbatim
    image: dict | None = None  # {"name", "path", "exists"}
    notes: str = ""
    sources: list = field(default_factory=list)


def seg(text, kind="text", fig=None) -> dict:
    """kind: text (prose written here, no digits), num (a Figure), name (an identifier such as an experiment
    name), config (text from the config), code (a command)."""
    out = {"text": str(text), "kind": kind}
    if fig is not None:
        out["fig"] = fig
    return out


def plain(segments) -> str:
    return "".join(s["text"] for s in segments)


def format_value(value, unit: str) -> tuple[str, float, int | None]:
    if unit not in FORMATS or not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value), 1, None
    scale, decimals, suffix, signed = FORMATS[unit]
    shown = round(value * scale, decimals)
    number = f"{abs(shown):,.{decimals}f}"
    sign = ("+" if shown > 0 else "−" if shown < 0 else "±") if signed else ("−" if shown < 0 else "")
    return f"{sign}{number}{suffix}", scale, decimals


def _number(text):
    """A summary cell as a number where it is one."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        return str(text)


class DeckBuilder:
    def __init__(self, summary: pd.DataFrame, manifest: dict, presentation: dict, experiments: list[dict],
                 run_name: str, plots_dir, summary_path=SUMMARY_FILE, manifest_path=MANIFEST_FILE,
                 run_args: str = "", profiles=(), model_name: str | None = None):
        missing = [c for c in COLUMNS if c not in summary.columns]
        if missing:
            raise ValueError(f"{summary_path}: missing column(s) {', '.join(missing)}; expected the summary table "
                             f"({', '.join(COLUMNS)})")
        if not experiments:
            raise ValueError("experiments: at least one experiment is needed (the first is the baseline)")
        self.summary = summary
        self.manifest = manifest
        self.p = presentation
        self.experiments = experiments
        self.names = [e["name"] for e in experiments]
        self.base = self.names[0]
        self.run_name = run_name
        self.plots_dir = Path(plots_dir)
        self.summary_path = str(summary_path)
        self.manifest_path = str(manifest_path)
        self.run_args = run_args
        self.profiles = list(profiles)
        self.model_name = model_name
        self.figures: list[Figure] = []
        self._figure_ids: dict[tuple, int] = {}
        self.slides: list[Slide] = []
        self._rows = {(r.experiment, r.stage, r.metric): r for r in summary.itertuples(index=False)}

    # --- figures -----------------------------------------------------------------------------------------------
    def _add(self, **kw) -> Figure:
        """A figure, the same one when the same number from the same place is asked for again (slides that
        show one number, such as an accuracy check, share its figure)."""
        key = (kw["kind"], json.dumps(kw["ref"], sort_keys=True), kw["label"], kw["text"])
        if key not in self._figure_ids:
            self._figure_ids[key] = len(self.figures)
            self.figures.append(Figure(id=len(self.figures), **kw))
        return self.figures[self._figure_ids[key]]

    def value(self, experiment, stage, metric):
        row = self._rows.get((experiment, stage, metric))
        return None if row is None else _number(row.value)

    def measured(self, experiment, stage, metric, unit=None) -> Figure | None:
        row = self._rows.get((experiment, stage, metric))
        value = None if row is None else _number(row.value)
        if value is None:
            return None
        text, scale, decimals = format_value(value, unit or row.unit)
        return self._add(text=text, value=value, kind="summary", scale=scale, decimals=decimals,
                         ref={"experiment": experiment, "stage": stage, "metric": metric}, source=str(row.source),
                         label=f"{metric} of {experiment} ({stage})")

    def from_manifest(self, key, label, unit=None) -> Figure | None:
        value = self.manifest.get(key)
        if value in (None, "", []):
            return None
        text, scale, decimals = format_value(value, unit) if unit else (str(value), 1, None)
        return self._add(text=text, value=value, kind="manifest", ref={"key": key}, source=self.manifest_path,
                         label=label, scale=scale, decimals=decimals)

    def from_config(self, key, value, unit) -> Figure:
        text, scale, decimals = format_value(value, unit)
        return self._add(text=text, value=value, kind="config", ref={"key": key}, source="config",
                         label=f"config {key}", scale=scale, decimals=decimals)

    def derived(self, op, args: list[Figure], unit, label) -> Figure | None:
        if any(a is None or not isinstance(a.value, (int, float)) for a in args):
            return None
        v = [a.value for a in args]
        value = {"diff": lambda: v[0] - v[1], "ratio": lambda: v[0] / v[1] if v[1] else None,
                 "remainder": lambda: v[0] - sum(v[1:])}[op]()
        if value is None:
            return None
        text, scale, decimals = format_value(value, unit)
        sources = " ".join(dict.fromkeys(s for a in args for s in a.source.split()))
        return self._add(text=text, value=value, kind="derived", ref={"op": op, "args": [a.id for a in args]},
                         source=sources, label=label, scale=scale, decimals=decimals)

    @staticmethod
    def num(f: Figure | None) -> dict:
        return seg(f.text, "num", f.id) if f is not None else seg(NOT_MEASURED)

    def image(self, name) -> dict:
        path = self.plots_dir / f"{name}.png"
        return {"name": name, "path": str(path), "exists": path.is_file()}

    def add(self, slide: Slide) -> Slide:
        self.slides.append(slide)
        return slide

    # --- helpers over the table --------------------------------------------------------------------------------
    def memory_metric(self, experiment) -> tuple[str, str]:
        """GPU peak memory where measured, else the host's (a CPU run)."""
        if self.value(experiment, "finetune", "peak_memory_gb") is not None:
            return "peak_memory_gb", "GPU"
        return "peak_host_memory_gb", "host"

    def accuracy_check(self, name) -> tuple[Figure | None, bool | None]:
        """The experiment's acc minus the baseline experiment's, and whether the loss stays within tolerance."""
        a, b = self.measured(name, "infer", "acc"), self.measured(self.base, "infer", "acc")
        delta = self.derived("diff", [a, b], "pp", f"acc of {name} minus acc of {self.base}")
        if delta is None:
            return None, None
        return delta, delta.value >= -float(self.p["accuracy_tolerance"]) - 1e-12

    def tolerance(self) -> Figure:
        return self.from_config("presentation.accuracy_tolerance", float(self.p["accuracy_tolerance"]), "pp_abs")

    # --- the slides --------------------------------------------------------------------------------------------
    def build(self) -> dict:
        self.title_slide()
        self.hardware_slide()
        self.workload_slide()
        self.baseline_slide()
        self.optimizations_slide()
        for e in self.experiments[1:]:
            self.experiment_slide(e)
        self.accuracy_slide()
        self.inference_slide()
        self.time_slide()
        self.memory_slide()
        self.scaling_slide()
        self.did_not_work_slide()
        self.reproduce_slide()
        for s in self.slides:
            self.finish(s)
        return {"title": self.p["title"], "team": self.p["team"], "run_name": self.run_name,
                "baseline": self.base, "summary": self.summary_path,
                "slides": [asdict(s) for s in self.slides], "figures": [asdict(f) for f in self.figures]}

    def finish(self, s: Slide) -> None:
        """Collect the sources of the numbers on a slide, for its small print and its speaker notes."""
        ids = [g["fig"] for g in _segments(s) if "fig" in g]
        sources, lines = [], []
        for i in dict.fromkeys(ids):
            f = self.figures[i]
            sources += [x for x in f.source.split() if x != "config"]
            lines.append(f"{f.text}: {f.label} [{f.source}]")
        s.sources = list(dict.fromkeys(sources))
        if lines:
            s.notes = (s.notes + "\n\n" if s.notes else "") + "Where the numbers come from:\n" + "\n".join(lines)

    def title_slide(self):
        bullets = [[seg(self.p["team"], "config")]]
        if self.p.get("members"):
            bullets.append([seg(", ".join(self.p["members"]), "config")])
        if self.p.get("event"):
            bullets.append([seg(self.p["event"], "config")])
        bullets.append([seg("Run "), seg(self.run_name, "name")])
        self.add(Slide("title", self.p["title"], layout="title", bullets=bullets,
                       notes="\n".join(self.p.get("narrative", []))))

    def hardware_slide(self):
        rows = []

        def row(label, f):
            if f is not None:
                rows.append([[seg(label)], [self.num(f)]])

        gpus = self.manifest.get("gpus") or []
        row("Host", self.measured("all", "env", "host") or self.from_manifest("host", "host name"))
        row("Platform", self.from_manifest("platform", "operating system and architecture"))
        row("CPU cores", self.from_manifest("cpu_count", "CPU cores seen by Python", "count"))
        if gpus:
            row("GPU", self.measured("all", "env", "gpu_model") or self.from_manifest("gpu_model", "GPU model"))
            gpu_count = self._add(text=str(len(gpus)), value=len(gpus), kind="manifest",
                                  ref={"key": "gpus", "len": True}, source=self.manifest_path,
                                  label="number of GPUs", decimals=0)
            row("GPUs per node", gpu_count)
            mem = gpus[0].get("memory_gb")
            if mem is not None:
                text, scale, dec = format_value(mem, "GB")
                row("GPU memory", self._add(text=text, value=mem, kind="manifest", ref={"key": "gpus.0.memory_gb"},
                                            source=self.manifest_path, label="memory of GPU 0", scale=scale,
                                            decimals=dec))
        else:
            rows.append([[seg("GPU")], [seg("none (CPU run)")]])
        for label, key in (("Python", "python"), ("PyTorch", "torch"), ("LitGPT", "litgpt"), ("CUDA", "cuda")):
            row(label, self.measured("all", "env", key) or self.from_manifest(key, f"{label} version"))
        for label, key in (("Lightning", "lightning"), ("Snakemake", "snakemake"), ("NCCL", "nccl")):
            row(label, self.from_manifest(key, f"{label} version"))
        bullets = [[seg("Devices per fine-tune (world size): ")]]
        sizes = [(n, self.measured(n, "finetune", "world_size")) for n in self.names]
        distinct = {f.value for _, f in sizes if f is not None}
        if len(distinct) == 1:
            bullets[0].append(self.num(sizes[0][1]))
            bullets[0].append(seg(" in every experiment: single device only, no scaling measured" if distinct == {1}
                                  else " in every experiment"))
        else:
            for i, (n, f) in enumerate(sizes):
                bullets[0] += ([seg(", ")] if i else []) + [seg(n, "name"), seg(" "), self.num(f)]
        self.add(Slide("hardware", "Hardware and software", layout="text", bullets=bullets,
                       table={"header": ["Component", "Measured"], "rows": rows},
                       notes="Read from the environment manifest written by the env stage before any other job."))

    def workload_slide(self):
        bullets = [[seg(w, "config")] for w in self.p.get("workload", [])]
        model = [seg("Model: ")]
        if self.model_name:
            model.append(seg(self.model_name, "name"))
        precision = self.measured(self.base, "finetune", "precision")
        if precision is not None:
            model += [seg(", precision "), self.num(precision)]
        bullets.append(model)
        bullets.append([seg("Fine-tune set: "), self.num(self.measured("all", "data", "train_records")),
                        seg(" training and "), self.num(self.measured("all", "data", "val_records")),
                        seg(" validation records")])
        bullets.append([seg("Evaluation: "), self.num(self.measured("all", "data", "eval_items")),
                        seg(" items, scored as lm-evaluation-harness scores HellaSwag (acc, acc_norm)")])
        bullets.append([seg("Rule kept: accuracy may drop at most "), self.num(self.tolerance()),
                        seg(" below the baseline experiment")])
        self.add(Slide("workload", "The workload and its rules", layout="text", bullets=bullets))

    def baseline_slide(self):
        b = self.base
        notes = self.experiments[0].get("notes", "")
        bullets = [[seg(notes, "config")]] if notes else []
        mem_metric, where = self.memory_metric(b)
        bullets += [
            [seg("Training time: "), self.num(self.measured(b, "finetune", "training_time_s"))],
            [seg("Throughput: "), self.num(self.measured(b, "finetune", "tokens_per_s_per_device")),
             seg(" per device")],
            [seg(f"Peak {where} memory: "), self.num(self.measured(b, "finetune", mem_metric))],
            [seg("Final loss: training "), self.num(self.measured(b, "finetune", "final_loss")),
             seg(", validation "), self.num(self.measured(b, "finetune", "final_val_loss"))],
            [seg("Accuracy after fine-tuning: "), self.num(self.measured(b, "infer", "acc")),
             seg(" (base model "), self.num(self.measured("base", "infer", "acc")), seg(")")],
        ]
        self.add(Slide("baseline", f"Baseline: {b}", bullets=bullets, image=self.image("loss"), notes=notes))

    def best(self) -> tuple[str | None, Figure | None]:
        """The fastest experiment whose accuracy stays within tolerance."""
        best, best_fig = None, None
        for n in self.names[1:]:
            sp = self.value(n, "finetune", f"speedup_vs_{self.base}")
            _, ok = self.accuracy_check(n)
            if isinstance(sp, float) and ok and (best_fig is None or sp > best_fig.value):
                best, best_fig = n, self.measured(n, "finetune", f"speedup_vs_{self.base}")
        return best, best_fig

    def optimizations_slide(self):
        rows = []
        for n in self.names:
            rows.append([[seg(n, "name")],
                         [self.num(self.measured(n, "finetune", "training_time_s"))],
                         [self.num(self.measured(n, "finetune", "tokens_per_s_per_device"))],
                         [self.num(self.measured(n, "finetune", f"speedup_vs_{self.base}"))],
                         [self.num(self.measured(n, "infer", "acc"))]])
        bullets = [[seg(t, "config")] for t in self.p.get("narrative", [])]
        best, fig = self.best()
        if best:
            bullets.insert(0, [seg("Best within the accuracy tolerance: "), seg(best, "name"), seg(", training "),
                               self.num(fig), seg(" faster than the baseline (ratio of training times)")])
        elif len(self.names) > 1:
            bullets.insert(0, [seg("No experiment beat the baseline within the accuracy tolerance")])
        self.add(Slide("optimizations", "From baseline to best", bullets=bullets, image=self.image("throughput"),
                       table={"header": ["Experiment", "Training", "Per device", "Time ratio", "acc"], "rows": rows},
                       notes="\n".join(self.p.get("narrative", []))))

    def experiment_slide(self, e: dict):
        n, b = e["name"], self.base
        speed = self.measured(n, "finetune", f"speedup_vs_{b}")
        delta, ok = self.accuracy_check(n)
        tps = self.measured(n, "finetune", "tokens_per_s_per_device")
        stats = [{"label": f"faster training than {b} (time ratio)", "value": [self.num(speed)]},
                 {"label": "tokens/s per device", "value": [self.num(tps)]},
                 {"label": f"acc vs {b}", "value": [self.num(delta)]}]
        bullets = [[seg(e["notes"], "config")]] if e.get("notes") else []
        overrides = e.get("finetune") or {}
        if overrides:
            bullets.append([seg("Changed: ")] + [seg(", ".join(f"{k} = {v}" for k, v in overrides.items()), "config")])
        for label, metric in (("Training time", "training_time_s"),
                              ("Throughput per device", "tokens_per_s_per_device")):
            bullets.append([seg(f"{label}: "), self.num(self.measured(b, "finetune", metric)), seg(" → "),
                            self.num(self.measured(n, "finetune", metric))])
        mem_metric, where = self.memory_metric(n)
        bullets.append([seg(f"Peak {where} memory: "), self.num(self.measured(b, "finetune", mem_metric)),
                        seg(" → "), self.num(self.measured(n, "finetune", mem_metric))])
        acc = [seg("Accuracy: "), self.num(self.measured(b, "infer", "acc")), seg(" → "),
               self.num(self.measured(n, "infer", "acc"))]
        if ok is not None:
            acc += [seg(", within the tolerance of " if ok else ", OUTSIDE the tolerance of "),
                    self.num(self.tolerance())]
        bullets.append(acc)
        self.add(Slide(f"experiment:{n}", f"Optimization: {n}", layout="text", stats=stats, bullets=bullets,
                       notes=e.get("notes", "")))

    def accuracy_slide(self):
        tol = self.tolerance()
        rows, outside = [], []
        for n in ["base", *self.names]:
            r = [[seg(n, "name")],
                 [self.num(self.measured(n, "infer", "acc"))], [self.num(self.measured(n, "infer", "acc_norm"))]]
            if n == "base":
                r += [[seg("not fine-tuned")], [seg("")]]
            elif n == self.base:
                r += [[seg("reference")], [seg("")]]
            else:
                delta, ok = self.accuracy_check(n)
                r += [[self.num(delta)], [seg("within" if ok else "OUTSIDE" if ok is not None else NOT_MEASURED)]]
                if ok is False:
                    outside.append(n)
            rows.append(r)
        verdict = ([seg("Every experiment is within the tolerance of "), self.num(tol),
                    seg(" below the baseline's acc")] if not outside else
                   [seg("Outside the tolerance of "), self.num(tol), seg(": ")] +
                   [s for i, n in enumerate(outside) for s in ([seg(", ")] if i else []) + [seg(n, "name")]])
        title = "Accuracy kept within tolerance" if not outside else "Accuracy: not all within tolerance"
        self.add(Slide("accuracy", title, bullets=[verdict], image=self.image("eval_accuracy"),
                       table={"header": ["Model", "acc", "acc_norm", f"Δ acc vs {self.base}", "Tolerance"],
                              "rows": rows}))

    def inference_slide(self):
        rows = [[[seg(n, "name")],
                 [self.num(self.measured(n, "infer", "wall_s"))], [self.num(self.measured(n, "infer", "items_per_s"))],
                 [self.num(self.measured(n, "infer", "acc"))]] for n in ["base", *self.names]]
        self.add(Slide("inference", "Evaluation: accuracy against time", image=self.image("infer_tradeoff"),
                       table={"header": ["Model", "Wall time", "Speed", "acc"], "rows": rows},
                       bullets=[[seg("Wall time covers loading the checkpoint and scoring every item")]]))

    def time_slide(self):
        extra = [m for m in ("load_s", "save_s") if any(self.value(n, "finetune", m) is not None for n in self.names)]
        header = ["Experiment", "Stage", "Training", *[{"load_s": "Load", "save_s": "Save"}[m] for m in extra], "Other"]
        rows = []
        for n in self.names:
            wall = self.measured(n, "finetune", "stage_wall_s")
            parts = [self.measured(n, "finetune", "training_time_s")] + [self.measured(n, "finetune", m) for m in extra]
            other = self.derived("remainder", [wall, *parts], "s", f"stage wall time of {n} minus its measured parts")
            rows.append([[seg(n, "name")], [self.num(wall)], *[[self.num(p)] for p in parts], [self.num(other)]])
        self.add(Slide("time", "Where the time goes", image=self.image("time_breakdown"),
                       table={"header": header, "rows": rows},
                       bullets=[[seg("Stage: the whole fine-tune job, from launch to the last file written")]]))

    def memory_slide(self):
        bullets = []
        for n in self.names:
            metric, where = self.memory_metric(n)
            bullets.append([seg(n, "name"), seg(f": peak {where} memory "),
                            self.num(self.measured(n, "finetune", metric))])
        self.add(Slide("memory", "Memory", image=self.image("memory"), bullets=bullets))

    def scaling_slide(self):
        """Only where experiments ran on different numbers of devices: one world size measures no scaling (the
        hardware slide says "single device only" then)."""
        sizes = {n: self.value(n, "finetune", "world_size") for n in self.names}
        if len({v for v in sizes.values() if v is not None}) < 2:
            return
        ref = min((n for n in self.names if sizes[n] is not None), key=lambda n: sizes[n])
        ref_tps = self.measured(ref, "finetune", "tokens_per_s_per_device")
        rows = []
        for n in sorted((n for n in self.names if sizes[n] is not None), key=lambda n: (sizes[n], self.names.index(n))):
            per_dev = self.measured(n, "finetune", "tokens_per_s_per_device")
            eff = self.derived("ratio", [per_dev, ref_tps], "fraction",
                               f"tokens/s per device of {n} over that of {ref}")
            rows.append([[seg(n, "name")], [self.num(self.measured(n, "finetune", "world_size"))],
                         [self.num(self.measured(n, "finetune", "tokens_per_s"))], [self.num(per_dev)],
                         [self.num(eff)]])
        self.add(Slide("scaling", "Scaling", layout="text",
                       bullets=[[seg("Efficiency: tokens/s per device against the smallest run, "), seg(ref, "name")]],
                       table={"header": ["Experiment", "Devices", "Tokens/s", "Per device", "Efficiency"],
                              "rows": rows}))

    def did_not_work_slide(self):
        bullets = [[seg(t, "config")] for t in self.p.get("did_not_work", [])]
        for n in self.names[1:]:
            sp = self.measured(n, "finetune", f"speedup_vs_{self.base}")
            if sp is not None and isinstance(sp.value, float) and sp.value < 1:
                bullets.append([seg(n, "name"), seg(": slower than the baseline, "), self.num(sp),
                                seg(" its training speed")])
            delta, ok = self.accuracy_check(n)
            if ok is False:
                bullets.append([seg(n, "name"), seg(": accuracy changed by "), self.num(delta),
                                seg(", more than the tolerance of "), self.num(self.tolerance())])
        if not bullets:
            bullets = [[seg("Nothing recorded: every experiment was at least as fast as the baseline and within "
                            "the accuracy tolerance")]]
        self.add(Slide("did_not_work", "What did not work", layout="text", bullets=bullets))

    def reproduce_slide(self):
        requirements = self.manifest.get("requirements") or "envs/cpu.txt"
        args = f" {self.run_args}" if self.run_args else ""
        code = [f"python3 -m venv .venv && .venv/bin/pip install -r {requirements} -e .   # set up",
                f". .venv/bin/activate && snakemake{args}   # every stage, this deck included"]
        code += [f"snakemake --profile {p}{args}   # on the cluster" for p in self.profiles]
        code += [f"snakemake --forcerun finetune{args}   # redo the fine-tunes and what follows",
                 f"snakemake --forcerun slides{args}   # re-render the slides only"]
        commit = self.measured("all", "env", "git_commit") or self.from_manifest("git_commit", "git commit")
        bullets = [[seg("Git commit: "), self.num(commit)],
                   [seg("Every measured number in this deck is a row of "), seg(self.summary_path, "name"),
                    seg(" (which names the file it came from) or of the environment manifest; the speaker notes "
                        "give each number's source")]]
        self.add(Slide("reproduce", "How to reproduce", layout="text", code=code, bullets=bullets,
                       notes="The commands, in order: set up the environment, run everything, run on a cluster "
                             "profile, rerun the fine-tunes (and what follows), re-render the slides only."))


def run_args(configfiles, config_args) -> str:
    """A run's --configfiles/--config as shell words, so that the reproduce slide shows the command that made
    the deck (paths inside the working directory are written relative to it)."""
    args = []
    if configfiles:
        args += ["--configfiles", *(_relative_to_cwd(p) for p in configfiles)]
    if config_args:
        args += ["--config", *map(str, config_args)]
    return " ".join(shlex.quote(a) for a in args)


def _relative_to_cwd(path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def cluster_profiles(profiles_dir) -> list[str]:
    """Cluster profiles shipped with the workflow, for the reproduce slide (not `default`, the local one that
    plain `snakemake` loads anyway)."""
    return [f"profiles/{name}" for name in available_profiles(Path(profiles_dir))]


def _segments(s) -> list[dict]:
    """Every text segment of a slide (dataclass or dict)."""
    s = asdict(s) if isinstance(s, Slide) else s
    out = [g for b in s["bullets"] for g in b]
    out += [g for st in s["stats"] for g in st["value"]]
    if s["table"]:
        out += [g for r in s["table"]["rows"] for c in r for g in c]
    return out


def build_deck(summary_csv, manifest_json, presentation: dict, experiments: list[dict], run_name: str,
               plots_dir, run_args: str = "", profiles=(), model_name: str | None = None) -> dict:
    """The slide model (a dict, written as slides.json). presentation: the config's section, defaults filled by
    the config check (workflow/schemas/config.schema.yaml holds them); experiments: the config's list (name,
    notes, finetune); the first is the baseline."""
    summary_csv, manifest_json = Path(summary_csv), Path(manifest_json)
    for path, what in ((summary_csv, "the summary table"), (manifest_json, "the environment manifest")):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {what} is missing; run the summary and env stages first")
    summary = pd.read_csv(summary_csv, dtype={"value": str}, keep_default_na=False, na_values=[""])
    manifest = json.loads(manifest_json.read_text())
    return DeckBuilder(summary, manifest, presentation, experiments, run_name, plots_dir,
                       summary_path=_rel(summary_csv), manifest_path=_rel(manifest_json), run_args=run_args,
                       profiles=profiles, model_name=model_name).build()


def _rel(path: Path) -> str:
    """results/... as the summary's source column writes paths, whatever the working directory."""
    parts = path.parts
    return str(Path(*parts[parts.index("results"):])) if "results" in parts else str(path)


# --- HTML --------------------------------------------------------------------------------------------------------
def data_uri(path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(deck: dict, templates_dir) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    figures = deck["figures"]
    images = {s["image"]["path"]: data_uri(s["image"]["path"])
              for s in deck["slides"] if s["image"] and s["image"]["exists"]}
    return env.get_template("deck.html.j2").render(deck=deck, figures=figures, images=images,
                                                   not_measured=NOT_MEASURED)


# --- PDF ---------------------------------------------------------------------------------------------------------
def find_chromium() -> str | None:
    """$CHROMIUM, else the first of chromium, chromium-browser, google-chrome on PATH."""
    if os.environ.get("CHROMIUM"):
        found = shutil.which(os.environ["CHROMIUM"])
        if not found:
            raise FileNotFoundError(f"$CHROMIUM={os.environ['CHROMIUM']}: no such executable")
        return found
    return next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)


def chromium_cmd(chromium: str, profile_dir, *args) -> list[str]:
    # --no-sandbox: containers and CI run as root, where Chromium's sandbox refuses to start.
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile_dir}", *args]


def pdf_with_chromium(chromium: str, html_path, pdf_path, timeout=180) -> None:
    html_path, pdf_path = Path(html_path).resolve(), Path(pdf_path).resolve()
    pdf_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(chromium_cmd(chromium, profile, "--no-pdf-header-footer", "--window-size=1280,720",
                                           f"--print-to-pdf={pdf_path}", html_path.as_uri()),
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not pdf_path.is_file() or pdf_path.stat().st_size == 0:
        raise RuntimeError(f"{chromium} --print-to-pdf failed ({proc.returncode}): {proc.stderr[-2000:]}")


def pdf_with_matplotlib(deck: dict, pdf_path) -> None:
    """One page per slide from the same slide model, for machines without a browser (a cluster login node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    n = len(deck["slides"])
    with PdfPages(pdf_path, metadata={"Title": deck["title"], "CreationDate": None}) as pdf:
        for i, s in enumerate(deck["slides"], 1):
            fig = plt.figure(figsize=(13.333, 7.5))
            title_slide = s["layout"] == "title"
            fig.patches.append(plt.Rectangle((0, 0.86 if not title_slide else 0), 1, 0.14 if not title_slide else 1,
                                             transform=fig.transFigure, color="#14213d", zorder=-1))
            fig.text(0.04, 0.93 if not title_slide else 0.6, s["title"], color="white", fontsize=26 if not title_slide
                     else 34, weight="bold", va="center")
            has_image = bool(s["image"])
            width = 0.44 if has_image else 0.92
            chars = int(110 * width)
            lines = []
            for st in s["stats"]:
                lines.append(f"{plain(st['value'])}  {st['label']}")
            for b in s["bullets"]:
                wrapped = textwrap.wrap(plain(b), chars) or [""]
                lines += [("• " if not title_slide else "") + wrapped[0]] + ["   " + w for w in wrapped[1:]]
            if s["table"]:
                t = s["table"]
                cells = [t["header"]] + [[plain(c) for c in r] for r in t["rows"]]
                widths = [max(len(r[j]) for r in cells) for j in range(len(t["header"]))]
                lines += [""] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
            lines += [""] + [f"$ {c}" for c in s["code"]] if s["code"] else []
            y0 = 0.5 if title_slide else 0.82
            fig.text(0.04, y0, "\n".join(lines), va="top", fontsize=17 if title_slide else 13,
                     family="DejaVu Sans Mono", color="white" if title_slide else "#14213d", linespacing=1.5)
            if has_image:
                ax = fig.add_axes((0.5, 0.08, 0.47, 0.75))
                ax.axis("off")
                if s["image"]["exists"]:
                    ax.imshow(mpimg.imread(s["image"]["path"]))
                else:
                    ax.text(0.5, 0.5, f"{s['image']['name']}: {NOT_MEASURED}", ha="center", va="center", fontsize=16,
                            color="#6b7280")
            foot = ("source: " + ", ".join(s["sources"])) if s["sources"] else ""
            fig.text(0.04, 0.025, textwrap.shorten(foot, 150), fontsize=8, color="#6b7280")
            fig.text(0.96, 0.025, f"{i} / {n}", fontsize=9, color="#6b7280", ha="right")
            pdf.savefig(fig)
            plt.close(fig)


def render_pdf(deck: dict, html_path, pdf_path, log=print) -> str:
    """Chromium's print of the HTML deck where a Chromium is found, else matplotlib; returns which was used."""
    chromium = find_chromium()
    if chromium:
        pdf_with_chromium(chromium, html_path, pdf_path)
        log(f"PDF: printed {html_path} with {chromium}")
        return "chromium"
    pdf_with_matplotlib(deck, pdf_path)
    log(f"PDF: no Chromium found ({', '.join(CHROMIUM_NAMES)} or $CHROMIUM); drew the slides with matplotlib")
    return "matplotlib"


# --- PPTX --------------------------------------------------------------------------------------------------------
def render_pptx(deck: dict, pptx_path) -> None:
    from pptx import Presentation
    from pptx.dml.color import RGBColor
    from pptx.enum.shapes import MSO_SHAPE
    from pptx.enum.text import PP_ALIGN
    from pptx.util import Emu, Inches, Pt

    navy, accent, grey, ink = RGBColor(0x14, 0x21, 0x3D), RGBColor(0x1F, 0x6F, 0xD1), RGBColor(0x6B, 0x72, 0x80), \
        RGBColor(0x1F, 0x29, 0x37)
    prs = Presentation()
    prs.slide_width, prs.slide_height = Inches(13.333), Inches(7.5)
    W = prs.slide_width
    layout = prs.slide_layouts[5]  # "Title Only": the title is a real title placeholder, the rest is ours
    n = len(deck["slides"])

    def runs(paragraph, segments, size, color=ink, bold_numbers=True):
        for g in segments:
            r = paragraph.add_run()
            r.text = g["text"]
            r.font.size = Pt(size)
            r.font.color.rgb = accent if g["kind"] == "num" and bold_numbers else color
            r.font.bold = g["kind"] == "num" and bold_numbers
            if g["kind"] == "code":
                r.font.name = "Consolas"

    def box(left, top, width, height):
        tb = slide.shapes.add_textbox(left, top, width, height)
        tb.text_frame.word_wrap = True
        return tb.text_frame

    for i, s in enumerate(deck["slides"], 1):
        slide = prs.slides.add_slide(layout)
        title = slide.shapes.title
        is_title = s["layout"] == "title"
        bar = slide.shapes.add_shape(MSO_SHAPE.RECTANGLE, 0, 0, W, prs.slide_height if is_title else Inches(1.1))
        bar.fill.solid()
        bar.fill.fore_color.rgb = navy
        bar.line.fill.background()
        slide.shapes._spTree.remove(bar._element)
        slide.shapes._spTree.insert(2, bar._element)  # behind the title
        title.left, title.top, title.width = Inches(0.5), Inches(2.2) if is_title else Inches(0.15), W - Inches(1)
        title.height = Inches(1.4) if is_title else Inches(0.8)
        title.text = s["title"]
        tp = title.text_frame.paragraphs[0]
        tp.font.size, tp.font.bold, tp.font.color.rgb = Pt(40 if is_title else 30), True, RGBColor(255, 255, 255)
        tp.alignment = PP_ALIGN.LEFT
        if is_title:
            tf = box(Inches(0.5), Inches(3.8), W - Inches(1), Inches(2.5))
            for j, b in enumerate(s["bullets"]):
                p = tf.paragraphs[0] if j == 0 else tf.add_paragraph()
                runs(p, b, 24 if j == 0 else 18, RGBColor(0xDB, 0xE4, 0xF0), bold_numbers=False)
        else:
            has_image = bool(s["image"])
            left_w = Inches(5.9) if has_image else W - Inches(1)
            top = Inches(1.35)
            if s["stats"]:
                cw = (W - Inches(1)) // len(s["stats"])
                for j, st in enumerate(s["stats"]):
                    tf = box(Inches(0.5) + j * cw, top, cw - Inches(0.2), Inches(1.2))
                    runs(tf.paragraphs[0], st["value"], 36)
                    p = tf.add_paragraph()
                    p.text = st["label"]
                    p.font.size, p.font.color.rgb = Pt(14), grey
                top += Inches(1.4)
            if s["bullets"]:
                # PowerPoint does not report wrapped heights: estimate lines from ~0.5 em per character.
                per_line = max(20, int(left_w / Inches(1) * 72 / (16 * 0.5)))
                lines = sum(max(1, math.ceil((len(plain(b)) + 2) / per_line)) for b in s["bullets"])
                height = Inches(16 * 1.2 / 72) * lines + Inches(0.08) * len(s["bullets"])
                tf = box(Inches(0.5), top, left_w, height)
                for j, b in enumerate(s["bullets"]):
                    p = tf.paragraphs[0] if j == 0 else tf.add_paragraph()
                    runs(p, [{"text": "• ", "kind": "text"}, *b], 16)
                top += height + Inches(0.2)
            if s["code"]:
                tf = box(Inches(0.5), top, left_w, Inches(0.4) * len(s["code"]))
                for j, c in enumerate(s["code"]):
                    p = tf.paragraphs[0] if j == 0 else tf.add_paragraph()
                    runs(p, [{"text": "$ " + c, "kind": "code"}], 14)
                top += Inches(0.4) * len(s["code"]) + Inches(0.2)
            if s["table"]:
                t = s["table"]
                rows, cols = len(t["rows"]) + 1, len(t["header"])
                shape = slide.shapes.add_table(rows, cols, Inches(0.5), top, left_w, Inches(0.38) * rows)
                for j, h in enumerate(t["header"]):
                    cell = shape.table.cell(0, j)
                    cell.text = h
                    cell.text_frame.paragraphs[0].font.size = Pt(13)
                for r, row in enumerate(t["rows"], 1):
                    for j, c in enumerate(row):
                        cell = shape.table.cell(r, j)
                        runs(cell.text_frame.paragraphs[0], c, 13, bold_numbers=False)
            if has_image:
                box_l, box_t, box_w, box_h = Inches(6.7), Inches(1.4), Inches(6.2), Inches(5.4)
                if s["image"]["exists"]:
                    from PIL import Image

                    with Image.open(s["image"]["path"]) as im:
                        w, h = im.size
                    scale = min(box_w / w, box_h / h)
                    pw, ph = int(w * scale), int(h * scale)
                    slide.shapes.add_picture(s["image"]["path"], box_l + (box_w - pw) // 2, box_t + (box_h - ph) // 2,
                                             Emu(pw), Emu(ph))
                else:
                    tf = box(box_l, box_t + box_h // 2, box_w, Inches(0.6))
                    runs(tf.paragraphs[0], [{"text": f"{s['image']['name']}: {NOT_MEASURED}", "kind": "text"}], 18,
                         grey)
            foot = ("source: " + ", ".join(s["sources"])) if s["sources"] else ""
            tf = box(Inches(0.5), prs.slide_height - Inches(0.45), W - Inches(2), Inches(0.35))
            runs(tf.paragraphs[0], [{"text": foot, "kind": "text"}], 9, grey)
        tf = box(W - Inches(1.3), prs.slide_height - Inches(0.45), Inches(0.9), Inches(0.35))
        runs(tf.paragraphs[0], [{"text": f"{i} / {n}", "kind": "text"}], 10, grey)
        slide.notes_slide.notes_text_frame.text = s["notes"] or s["title"]
    prs.save(pptx_path)


# --- everything --------------------------------------------------------------------------------------------------
def render_all(deck: dict, templates_dir, out: dict, log=print) -> dict:
    """out: {"html", "pdf", "pptx", "json"} paths. Writes all four; returns the slide model as written."""
    for p in out.values():
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    Path(out["html"]).write_text(render_html(deck, templates_dir), encoding="utf-8")
    log(f"HTML: {out['html']} ({len(deck['slides'])} slides)")
    render_pptx(deck, out["pptx"])
    log(f"PPTX: {out['pptx']}")
    deck = {**deck, "pdf_renderer": render_pdf(deck, out["html"], out["pdf"], log=log)}
    Path(out["json"]).write_text(json.dumps(deck, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return deck
