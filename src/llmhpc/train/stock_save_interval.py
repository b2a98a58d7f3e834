"""The stock engine's step-checkpoint interval from the job's walltime. Stock `litgpt finetune_full` saves every
`train.save_interval` optimizer steps, a number fixed in its YAML (the presets' is huge: only the final model), so a
walltime kill would find nothing to resume from. In a scheduler job (llmhpc.train.walltime.job_clock) the stage
launches litgpt on a copy of the YAML whose interval is min(configured, walltime.plan's): a kill then loses at most
finetune.save_walltime_share of the walltime. The copy differs only in train.save_interval, which the resume
settings leave out (llmhpc.train.resume.NOT_TRAINING): a rerun still resumes from the same step checkpoints.

The step time the plan divides by: the seconds per optimizer step that an earlier attempt of the same experiment
measured (litgpt's out_dir/logs/csv/version_*/metrics.csv: `iter_time`, one micro batch, x the micro batches of a
step; litgpt's CSV logger writes each row at once with train.log_interval 1, the default, else only at the end),
else an estimate: the model's training FLOPs per optimizer step over the GPU's peak at ESTIMATE_MFU. Pure functions;
the stage logs and records what they chose.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from llmhpc import atomic
from llmhpc.settings import FinetuneSettings
from llmhpc.train import resume, walltime
from llmhpc.train.litgpt import find_metrics_csv, read_metrics_csv
from llmhpc.train.metrics import flops_per_token

# MFU the estimate assumes: below every MFU stock litgpt reached on H100/H200 (6.4 % to 17.3 % on useful tokens:
# docs/bench-finetune.md, docs/history.md), and the FLOPs are counted on max_seq_length tokens a sample (padding
# included), so the estimated step is longer than the real one: overestimating the step time only makes the saves
# come more often.
ESTIMATE_MFU = 0.05
JOB_YAML = "litgpt.job.yaml"


@dataclass(frozen=True)
class Interval:
    save_interval: int
    configured: int | None
    step_s: float | None
    source: str  # "measured", "estimate", or "configured" (kept)
    why: str

    def line(self) -> str:
        """The log line, as the fsdp2 engine's."""
        return f"Step checkpoints every {self.save_interval} steps ({self.why})"

    def record(self) -> dict:
        return {f"save_interval_{k}" if k != "save_interval" else k: v for k, v in asdict(self).items()}


def measured_step_s(out_dir: Path, accumulation: int, settings_now: dict | None = None) -> float | None:
    """Seconds per optimizer step of the earlier attempt in out_dir: the median `iter_time` of litgpt's rows after
    the first optimizer step (warm-up), x `accumulation`. None without rows, or where the attempt was trained with
    other settings than `settings_now` (resume.training_settings) by its resume-settings.json."""
    out_dir = Path(out_dir)
    saved = out_dir / resume.SETTINGS_FILE
    if settings_now is not None and saved.is_file() and json.loads(saved.read_text()) != settings_now:
        return None
    path = find_metrics_csv(out_dir)
    if path is None:
        return None
    rows = [r for r in read_metrics_csv(path) if r.get("iter_time") and r.get("iter") is not None]
    warm = [r for r in rows if r["iter"] > accumulation] or rows
    if not warm:
        return None
    return statistics.median(r["iter_time"] for r in warm) * max(1, accumulation)


def parameters(model_config: dict) -> int:
    """Parameters a token passes through, from litgpt's model_config.yaml: embedding and head, attention and MLP of
    every layer (norms and biases left out; a mixture of experts counts its active experts)."""
    d, layers = model_config["n_embd"], model_config["n_layer"]
    heads = model_config.get("n_head") or 1
    head_size = model_config.get("head_size") or d // heads
    groups = model_config.get("n_query_groups") or heads
    inner = model_config.get("intermediate_size") or 4 * d
    vocab = model_config.get("padded_vocab_size") or model_config.get("vocab_size") or 0
    attention = d * (heads + 2 * groups) * head_size + heads * head_size * d
    mlp_class = str(model_config.get("mlp_class_name", "GptNeoxMLP"))
    mlp = (2 if mlp_class == "GptNeoxMLP" else 3) * d * inner
    if "MoE" in mlp_class:
        mlp *= model_config.get("n_expert_per_token") or 1
    return 2 * vocab * d + layers * (attention + mlp)


def estimated_step_s(model_config: dict, s: FinetuneSettings, peak: float | None,
                     mfu: float = ESTIMATE_MFU) -> float | None:
    """Seconds per optimizer step at `mfu` of `peak` TFLOP/s per device: training FLOPs (metrics.flops_per_token)
    of global_batch_size x max_seq_length tokens, shared by the job's devices. None without a known peak."""
    if not peak:
        return None
    seq = s.max_seq_length
    per_token = flops_per_token(parameters(model_config), model_config["n_layer"], model_config["n_embd"], seq,
                                frozen_base=s.method != "full")
    return per_token * s.samples_per_step * seq / s.world_size / (peak * 1e12 * mfu)


def choose(configured: int | None, clock: tuple[float, float] | None, now: float, share: float,
           measured_s: float | None, estimate_s: float | None, gpu: str | None = None) -> Interval:
    """The interval the job runs with: `configured` where the job's end is unknown (a local run) or no step time is
    known, else min(configured, walltime.plan's every) from the measured step time, or the estimate."""
    if clock is None:
        return Interval(configured, configured, None, "configured", "train.save_interval; no scheduler job: its end"
                        " is unknown")
    step_s, source = (measured_s, "measured") if measured_s else (estimate_s, "estimate")
    if not step_s:
        return Interval(configured, configured, None, "configured",
                        f"train.save_interval; no step time: no earlier attempt measured one and no peak TFLOP/s is"
                        f" known for {gpu or 'this device'} (hardware.peak_tflops)")
    start, end = clock
    cap = configured or 1 << 62
    plan = walltime.plan(0, end - now, end - start, step_s, None, share, cap)
    how = ("measured by the earlier attempt (median iter_time x micro batches a step, its metrics.csv)"
           if source == "measured" else
           f"estimated: training FLOPs of a step over {gpu or 'the GPU'}'s peak at {ESTIMATE_MFU:.0%} MFU")
    which = (f"train.save_interval {configured} is sooner than" if plan.every == configured else
             f"sooner than train.save_interval {configured}:")
    why = f"{which} {share:.0%} of the {end - start:.0f} s walltime at {step_s:.3g} s a step, {how}"
    return Interval(plan.every, configured, round(step_s, 4), source, why)


def write_job_yaml(config_path: Path, interval: Interval) -> Path:
    """The YAML litgpt runs: the configured one with train.save_interval set to the chosen interval (the
    configured file, which the rule wrote and the submission carries, is left as it is)."""
    cfg = yaml.safe_load(Path(config_path).read_text())
    cfg.setdefault("train", {})["save_interval"] = interval.save_interval
    path = Path(config_path).with_name(JOB_YAML)
    header = (f"# {Path(config_path).name} as this scheduler job runs it: train.save_interval from the walltime"
              f" (configured: {interval.configured}); {interval.why}\n")
    atomic.write_text(path, header + yaml.safe_dump(cfg, sort_keys=False))
    return path
