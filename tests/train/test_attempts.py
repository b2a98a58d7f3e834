"""A run killed twice and resumed: the attempts' rows make one metrics.csv from step 1, and the figures are the
whole run's (pure functions over the recorded attempts)."""

from __future__ import annotations

import json
import os

from llmhpc.train import attempts
from llmhpc.train.registry import FSDP2, STOCK


def rows(steps, accumulation=2, iter_time=0.5):
    return [{"loss": 5.0 - s / 10, "iter": float(s * accumulation), "step": float(s * accumulation),
             "iter_time": iter_time} for s in steps]


def killed_attempt(out, steps, started, log_written, checkpoint=None):
    """What a killed attempt leaves: its CSV log (last written at `log_written`) and, maybe, a whole checkpoint."""
    log = out / "logs/csv/version_0"
    log.mkdir(parents=True, exist_ok=True)
    attempts.write_csv(log / "metrics.csv", rows(steps))
    os.utime(log / "metrics.csv", (log_written, log_written))
    if checkpoint is not None:
        step, saved = checkpoint
        (out / f"step-{step:06d}").mkdir()
        (out / f"step-{step:06d}/resume.json").write_text("{}")
        os.utime(out / f"step-{step:06d}/resume.json", (saved, saved))


def test_two_kills_make_one_log_from_step_1_and_the_figures_count_every_attempt(tmp_path):
    out, t = tmp_path / "out", 1_000_000.0
    attempts.begin(out, None)
    history = json.loads((out / "attempts.json").read_text())
    history["current"]["started"] = t
    (out / "attempts.json").write_text(json.dumps(history))
    killed_attempt(out, range(1, 8), t, t + 70, checkpoint=(5, t + 50))  # steps 1-7, saved at 5
    attempts.close_previous(out, STOCK, 2)
    attempts.begin(out, out / "step-000005")
    history = json.loads((out / "attempts.json").read_text())
    history["current"]["started"] = t + 100  # the second attempt starts later (queue), is killed before a save
    (out / "attempts.json").write_text(json.dumps(history))
    killed_attempt(out, range(6, 9), t + 100, t + 130)
    attempts.close_previous(out, STOCK, 2)
    history = attempts.begin(out, out / "step-000005")  # the same checkpoint again
    killed = history["killed"]
    assert [(a["start_step"], a["steps"], a["training_time_s"]) for a in killed] == [(0, 7, 7.0), (5, 3, 3.0)]
    assert [a["lost_time_s"] for a in killed] == [20.0, 30.0]  # after the save; all of the second (it saved none)
    merged = attempts.continuous(history, rows(range(6, 13)), 2)
    assert [int(r["iter"]) // 2 for r in merged] == list(range(1, 13))
    summary = {"training_time_s": 7.0, "steps": 12, "resumed_from_step": 5, "tokens_per_s": 100.0, "mfu": 0.1,
               "trained_samples": 12 * 8}
    whole = attempts.whole_run(history, summary, world=2)
    assert whole["training_time_s"] == 17.0 and whole["attempts"] == 3 and whole["lost_time_s"] == 50.0
    # the run's 96 samples over all 17 s: the 2 + 3 steps redone after the kills are lost time, not more samples
    assert whole["samples_per_s"] == round(12 * 8 / 17.0, 3)
    assert whole["tokens_per_s"] == round(100.0 * 12 / 17.0, 2) and whole["mfu"] == round(0.1 * 12 / 17.0, 4)


def test_the_running_token_counts_go_on_across_attempts():
    """LitGPT counts tokens from 0 in each attempt: the merged log's counts keep rising from step 1."""
    def counted(steps, first):
        return [{**r, "tokens": 100.0 * (s - first + 1), "total_tokens": 100.0 * (s - first + 1)}
                for r, s in zip(rows(steps), steps)]

    history = {"killed": [{"start_step": 0, "rows": counted(range(1, 8), 1)}], "current": {"start_step": 5}}
    merged = attempts.continuous(history, counted(range(6, 9), 6), 2)
    assert [int(r["iter"]) // 2 for r in merged] == list(range(1, 9))
    assert [r["tokens"] for r in merged] == [100.0 * s for s in range(1, 9)]
    assert [r["total_tokens"] for r in merged] == [100.0 * s for s in range(1, 9)]


def test_a_run_that_starts_over_forgets_the_earlier_attempts(tmp_path):
    out = tmp_path / "out"
    killed_attempt(out, range(1, 4), 0, 10, checkpoint=(2, 5))
    attempts.close_previous(out, FSDP2, 2)
    assert attempts.load(out)["killed"]
    assert attempts.begin(out, None)["killed"] == []
    assert attempts.whole_run(attempts.load(out), {"training_time_s": 3.0, "steps": 3, "trained_samples": 24}, 1) == {
        "attempts": 1, "lost_time_s": 0.0}
