"""The fast scorer against lm-evaluation-harness itself: the same tiny model (Hugging Face for lm-eval, its LitGPT
conversion for ours), the same items, lm-eval's own hellaswag task; per item the same choices (acc and
acc_norm) and log-likelihoods within 1e-4 (both in float32 on CPU). Reuses the reference scorer's cross-check
(test_lmeval_crosscheck.py): its model, items and lm-eval run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_lmeval_crosscheck import N_ITEMS, eval_file, models, run_lmeval  # noqa: F401  (fixtures reused)

pytestmark = [pytest.mark.litgpt]


def test_fast_scorer_matches_lm_eval(models, eval_file, tmp_path, monkeypatch):  # noqa: F811
    from llmhpc.eval.run import main

    hf_dir, lit_dir = models
    out = tmp_path / "fast"
    assert main(["--checkpoint", str(lit_dir), "--eval-file", str(eval_file), "--predictions",
                 str(out / "p.jsonl"), "--metrics", str(out / "m.json"), "--device", "cpu", "--bos", "false",
                 "--token-budget", "900", "--quiet"]) == 0
    ours = [json.loads(line) for line in (out / "p.jsonl").read_text().splitlines()]
    task, results = run_lmeval(hf_dir, eval_file, tmp_path, monkeypatch)
    samples = sorted(results["samples"][task.config.task], key=lambda s: s["doc_id"])
    assert len(samples) == len(ours) == N_ITEMS
    worst = 0.0
    for row, sample in zip(ours, samples):
        their = np.array([float(r[0]) for r in sample["filtered_resps"]])
        worst = max(worst, float(np.abs(their - np.array(row["loglikelihoods"])).max()))
        assert sample["acc"] == row["acc"] and sample["acc_norm"] == row["acc_norm"], row["index"]
        assert int(np.argmax(their)) == row["pred"], row["index"]
    assert worst <= 1e-4, worst
    metrics = json.loads((out / "m.json").read_text())
    agg = results["results"][task.config.task]
    assert agg["acc,none"] == pytest.approx(metrics["acc"]) and agg["acc_norm,none"] == pytest.approx(metrics["acc_norm"])
