"""The slide model: every number a Figure that names its source."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from llmhpc.outputs.slides.content import SlideContent
from llmhpc.outputs.slides.figures import (
    MANIFEST_FILE,
    NOT_MEASURED,
    SUMMARY_FILE,
    Figure,
    Slide,
    _number,
    _segments,
    format_value,
    seg,
)
from llmhpc.outputs.slides.training import TrainingSlides
from llmhpc.outputs.summary_table import COLUMNS
from llmhpc.settings import FinetuneSettings, PresentationSettings


class DeckBuilder(SlideContent, TrainingSlides):
    def __init__(self, summary: pd.DataFrame, manifest: dict, presentation: dict, experiments: list[dict],
                 run_name: str, plots_dir, summary_path=SUMMARY_FILE, manifest_path=MANIFEST_FILE,
                 run_args: str = "", profiles=(), model_name: str | None = None, model_source: str | None = None):
        missing = [c for c in COLUMNS if c not in summary.columns]
        if missing:
            raise ValueError(f"{summary_path}: missing column(s) {', '.join(missing)}; expected the summary table "
                             f"({', '.join(COLUMNS)})")
        if not experiments:
            raise ValueError("experiments: at least one experiment is needed (the first is the baseline)")
        self.summary = summary
        self.manifest = manifest
        self.p = PresentationSettings.from_dict(presentation)
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
        self.model_source = model_source
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
                 "remainder": lambda: v[0] - sum(v[1:]), "product": lambda: math.prod(v), "sum": lambda: sum(v),
                 # micro batches per step from (global batch, micro batch, GPUs): the settings' own arithmetic
                 "accumulation": lambda: FinetuneSettings.from_dict(
                     {"global_batch_size": int(v[0]), "micro_batch_size": int(v[1]), "devices": int(v[2])}).accumulation}[op]()
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
        a, b = self.measured(name, "evaluate", "acc"), self.measured(self.base, "evaluate", "acc")
        delta = self.derived("diff", [a, b], "pp", f"acc of {name} minus acc of {self.base}")
        if delta is None:
            return None, None
        return delta, delta.value >= -float(self.p.accuracy_tolerance) - 1e-12

    def tolerance(self) -> Figure:
        return self.from_config("presentation.accuracy_tolerance", float(self.p.accuracy_tolerance), "pp_abs")

    # --- the slides --------------------------------------------------------------------------------------------
    def build(self) -> dict:
        self.title_slide()
        self.hardware_slide()
        self.workload_slide()
        self.batch_slide()
        self.baseline_slide()
        self.optimizations_slide()
        for e in self.experiments[1:]:
            self.experiment_slide(e)
        self.accuracy_slide()
        self.accuracy_samples_slide()
        self.inference_slide()
        self.serving_slide()
        self.time_slide()
        self.cost_slide()
        self.memory_slide()
        self.scaling_slide()
        self.did_not_work_slide()
        self.reproduce_slide()
        for s in self.slides:
            self.finish(s)
        return {"title": self.p.title, "team": self.p.team, "run_name": self.run_name,
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



def build_deck(summary_csv, manifest_json, presentation: dict, experiments: list[dict], run_name: str,
               plots_dir, run_args: str = "", profiles=(), model_name: str | None = None,
               model_source: str | None = None) -> dict:
    """The slide model (a dict, written as slides.json). presentation: the config's section, defaults filled by
    the config check (workflow/schemas/config.schema.yaml holds them); experiments: the config's list (name,
    notes, finetune); the first is the baseline. model_source: the config's model.source (tiny: the base model has
    random weights, and the deck says so where it shows its accuracy)."""
    summary_csv, manifest_json = Path(summary_csv), Path(manifest_json)
    for path, what in ((summary_csv, "the summary table"), (manifest_json, "the environment manifest")):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {what} is missing; run the summary and env stages first")
    summary = pd.read_csv(summary_csv, dtype={"value": str}, keep_default_na=False, na_values=[""])
    manifest = json.loads(manifest_json.read_text())
    return DeckBuilder(summary, manifest, presentation, experiments, run_name, plots_dir,
                       summary_path=_rel(summary_csv), manifest_path=_rel(manifest_json), run_args=run_args,
                       profiles=profiles, model_name=model_name, model_source=model_source).build()


def _rel(path: Path) -> str:
    """results/... as the summary's source column writes paths, whatever the working directory."""
    parts = path.parts
    return str(Path(*parts[parts.index("results"):])) if "results" in parts else str(path)


