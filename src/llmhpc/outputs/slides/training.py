"""Slides on how the fine-tunes trained: the batch arithmetic as the ISC25 seed team wrote it ("per-device batch
16 x 8 GPUs x accumulation 2 = effective batch 256; 256 x 512 = 131,072 tokens per step"), and accuracy against
samples/s, the trade-off that team argued (DoRA's accuracy against QLoRA's memory and LoRA's speed).

Every number is a summary row of the experiment's fine-tune (its summary.json records the settings that ran and,
on a site with charge rates, what the job cost in service units; an evaluation's metrics.json records its cost too)
or a figure derived from such rows by the batch arithmetic of llmhpc.settings.FinetuneSettings or by a sum or ratio.
The deck writes "·" for a product: "×" is its ratio sign alone.
"""

from __future__ import annotations

from llmhpc.cluster.cost import ESTIMATE_FILE
from llmhpc.outputs.slides.figures import Slide, seg


class TrainingSlides:
    """Mixed into DeckBuilder beside SlideContent."""

    def batch_figures(self, n: str) -> dict:
        """The batch arithmetic of experiment n as figures: per device, GPUs, accumulation, effective batch,
        sequence length and tokens per step (None where the summary lacks a part)."""
        per_device = self.measured(n, "finetune", "micro_batch_size")
        gpus = self.measured(n, "finetune", "world_size")
        accumulation = self.derived("accumulation", [self.measured(n, "finetune", "global_batch_size"), per_device, gpus],
                                    "count", f"micro batches per optimizer step on each GPU of {n}"
                                             " (global batch / GPUs / per-device batch)")
        effective = self.derived("product", [per_device, gpus, accumulation], "samples",
                                 f"samples per optimizer step of {n} (per-device batch · GPUs · accumulation)")
        seq = self.measured(n, "finetune", "max_seq_length")
        tokens = self.derived("product", [effective, seq], "tokens",
                              f"tokens per optimizer step of {n} at max_seq_length (effective batch · max_seq_length)")
        return {"per_device": per_device, "gpus": gpus, "accumulation": accumulation, "effective": effective,
                "seq": seq, "tokens": tokens}

    def batch_slide(self):
        """Every deck with a fine-tune: the arithmetic is the same for every method (full, LoRA, DoRA, QLoRA), and
        the step's samples and tokens are what samples/s and tokens/s count."""
        arithmetic = {n: self.batch_figures(n) for n in self.names}
        if all(a["per_device"] is None for a in arithmetic.values()):
            return
        rows = [[[seg(n, "name")], *[[self.num(a[k])] for k in ("per_device", "gpus", "accumulation", "effective",
                                                                   "tokens")],
                 [self.num(self.measured(n, "finetune", "samples_per_s"))],
                 [self.num(self.measured(n, "finetune", "tokens_per_s_per_device"))]]
                for n, a in arithmetic.items()]
        n, a = self.base, arithmetic[self.base]
        said = [seg(n, "name"), seg(": per-device batch "), self.num(a["per_device"]), seg(" · "),
                self.num(a["gpus"]), seg(" GPU · accumulation " if self.value(n, "finetune", "world_size") == 1
                                         else " GPUs · accumulation "), self.num(a["accumulation"]),
                seg(" = effective batch "), self.num(a["effective"]), seg("; "), self.num(a["effective"]),
                seg(" · "), self.num(a["seq"]), seg(" = "), self.num(a["tokens"]), seg(" per step")]
        bullets = [said, [seg("Samples/s, the ISC score: samples trained (records · epochs, or max_steps · effective"
                              " batch) / training time; tokens per step at max_seq_length (packing fills each row to"
                              " it, stock pads to the longest)")]]
        stats = [{"label": f"samples per optimizer step of {n}", "value": [self.num(a["effective"])]},
                 {"label": f"tokens per optimizer step of {n}", "value": [self.num(a["tokens"])]},
                 {"label": f"samples/s of {n}", "value": [self.num(self.measured(n, "finetune", "samples_per_s"))]}]
        self.add(Slide("batch", "Batch arithmetic: samples and tokens per step", layout="text", bullets=bullets,
                       stats=stats,
                       table={"header": ["Experiment", "Per device", "GPUs", "Accumulation", "Effective batch",
                                         "Tokens per step", "Samples/s", "Tokens/s per GPU"], "rows": rows}))

    def accuracy_samples_slide(self):
        """Accuracy after fine-tuning against samples/s, one point per experiment, only where at least two
        experiments have both figures (one point is no trade-off)."""
        both = [n for n in self.names if self.value(n, "finetune", "samples_per_s") is not None
                and self.value(n, "evaluate", "acc") is not None]
        if len(both) < 2:
            return
        rows = [[[seg(n, "name")], [self.num(self.measured(n, "finetune", "method"))],
                 [self.num(self.measured(n, "finetune", "samples_per_s"))],
                 [self.num(self.measured(n, "evaluate", "acc"))]] for n in both]
        self.add(Slide("accuracy_samples", "Accuracy against samples per second", image=self.image("accuracy_samples"),
                       bullets=[[seg("Each method's accuracy after fine-tuning against its training speed, both"
                                     " measured: the trade-off between speed and accuracy as a figure")]],
                       table={"header": ["Experiment", "Method", "Samples/s", "acc"], "rows": rows}))

    def cost_slide(self):
        """Only where the site charged the jobs (the fine-tunes' summaries and the evaluations' metrics carry su or
        su_estimate): each GPU job's measured cost in service units beside its estimate, the rate, resources and
        wall time the measured cost is the product of, and the total of every job."""
        jobs = [("base", "evaluate")] + [(n, stage) for n in self.names for stage in ("finetune", "evaluate")]
        costed = [(n, stage) for n, stage in jobs if self.value(n, stage, "su") is not None
                  or self.value(n, stage, "su_estimate") is not None]
        if not costed:
            return
        rows, spent = [], []
        for n, stage in costed:
            su, estimate = self.measured(n, stage, "su"), self.measured(n, stage, "su_estimate")
            share = self.derived("ratio", [su, estimate], "fraction", f"measured cost of {n} ({stage}) over its estimate")
            rows.append([[seg(n, "name"), seg(" fine-tune" if stage == "finetune" else " evaluation")],
                         [self.num(self.measured(n, stage, "su_queue"))], [self.num(self.measured(n, stage, "su_rate"))],
                         [self.num(self.measured(n, stage, "su_units")), seg(" "),
                          self.num(self.measured(n, stage, "su_resource"))],
                         [self.num(self.measured(n, stage, "stage_wall_s"))],
                         [self.num(su)], [self.num(estimate)], [self.num(share)]])
            spent.append(su)
        total = self.derived("sum", spent, "SU", "measured cost of every fine-tune and evaluation job, in service units")
        bullets = [[seg("Measured: the job's stage wall time · the resources it held · its queue's rate; estimate: the"
                        " same at its requested walltime, an upper bound, as "),
                    seg(ESTIMATE_FILE, "name"), seg(" recorded it before the run")]]
        stats = [] if total is None else [{"label": "service units, every fine-tune and evaluation, measured",
                                           "value": [self.num(total)]}]
        self.add(Slide("cost", "What the jobs cost", layout="text", bullets=bullets, stats=stats,
                       table={"header": ["Job", "Queue", "Rate", "Charged per hour", "Stage wall time",
                                         "Measured", "Estimate", "Share of estimate"], "rows": rows}))
