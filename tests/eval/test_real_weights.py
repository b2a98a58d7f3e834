"""The three scorers on real trained weights, where the logits are not flat and a subtly wrong fast path shows:
the fast scorer (llmhpc.eval.run) and the reference scorer (the evaluate stage's own) on the LitGPT checkpoint, and
lm-evaluation-harness's HF backend with its real `hellaswag` task on the Hugging Face directory it was converted
from, all in float32 on CPU, over real-text items (CPython's manual, tests/sources/test_prose.py). Per item: the same
query and choices, the same acc and acc_norm answer, and every choice's log-likelihood of the reference scorer within
1e-4 nats of lm-eval's.

The fast scorer is held to 1e-3: it takes each token's log-probability as logit - logsumexp, the other two through
torch.log_softmax, whose float32 CPU kernel loses about 2e-5 nats a token over SmolLM2's 49,152 logits. Measured on
item 0's first choice (19 tokens): log_softmax in float32 -60.52173, the fast scorer -60.52210, a float64 forward
-60.52211; the reference scorer and lm-eval, the same definition, agree to 1e-6. With random weights the gap did
not show (flat logits); here it is 2.4e-4 to 8.4e-4 nats on sums of 30 to 150, and the answers are the same.

The model is SmolLM2-135M-Instruct from the package registry (tests/real_weights.py builds it once)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.registry, pytest.mark.litgpt]

N_ITEMS = 8
LL_ABS_TOL = 1e-4  # the reference scorer against lm-eval: the same float32 log_softmax
FAST_ABS_TOL = 1e-4  # the fast scorer, whose log_softmax is lm-eval's
TASK_NAME = "hellaswag_llmhpc_real"


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory):
    from llmhpc.sources import prose
    from llmhpc.stages.data import write_jsonl

    path = tmp_path_factory.mktemp("real_eval") / "hellaswag.jsonl"
    write_jsonl(path, prose.eval_records(limit=N_ITEMS))
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def lm_eval_samples(hf_dir: Path, eval_file: Path, work_dir: Path, monkeypatch) -> list[dict]:
    """lm-eval's own hellaswag task (its process_docs, requests and metrics) on the local file, HFLM, offline."""
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    import datasets.config
    for attr in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        if hasattr(datasets.config, attr):
            monkeypatch.setattr(datasets.config, attr, True)
    import lm_eval
    from lm_eval.tasks import TaskManager

    upstream = Path(lm_eval.__file__).parent / "tasks" / "hellaswag" / "hellaswag.yaml"
    task_dir = work_dir / "tasks"
    task_dir.mkdir()
    (task_dir / f"{TASK_NAME}.yaml").write_text(
        f"include: {json.dumps(str(upstream))}\ntask: {TASK_NAME}\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {json.dumps(str(eval_file))}\n"
        f"  cache_dir: {json.dumps(str(work_dir / 'hf_datasets_cache'))}\n"
        "training_split: null\nvalidation_split: validation\ntest_split: null\n", encoding="utf-8")
    task = TaskManager(include_path=str(task_dir), include_defaults=False).load([TASK_NAME])["tasks"][TASK_NAME]
    assert task.config.process_docs.__module__ == "lm_eval.tasks.hellaswag.utils"
    results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_dir},dtype=float32", tasks=[task],
                                      device="cpu", batch_size=8, num_fewshot=0, log_samples=True,
                                      bootstrap_iters=0, use_cache=None)
    return sorted(results["samples"][TASK_NAME], key=lambda s: s["doc_id"])


def score_three(hf_dir, lit_dir, eval_file, tmp_path, monkeypatch):
    from llmhpc.eval.reference import evaluate
    from llmhpc.eval.run import score_file

    ref_metrics = evaluate(lit_dir, eval_file, tmp_path / "ref.jsonl", tmp_path / "ref.json", precision="32-true",
                           batch_size=8, bos="false", device="cpu", log=lambda *a, **k: None)
    fast_metrics = score_file(lit_dir, eval_file, tmp_path / "fast.jsonl", tmp_path / "fast.json",
                              precision="32-true", bos="false", device="cpu", compile="false")
    samples = lm_eval_samples(hf_dir, eval_file, tmp_path, monkeypatch)
    return _rows(tmp_path / "ref.jsonl"), _rows(tmp_path / "fast.jsonl"), samples, ref_metrics, fast_metrics


def test_fast_reference_and_lm_eval_agree_on_real_weights(real_model, eval_file, tmp_path, monkeypatch):
    hf_dir, lit_dir = real_model
    ref, fast, samples, ref_metrics, fast_metrics = score_three(hf_dir, lit_dir, eval_file, tmp_path, monkeypatch)
    assert len(ref) == len(fast) == len(samples) == N_ITEMS

    worst = {"fast": 0.0, "reference": 0.0}
    for i, (r, f, s) in enumerate(zip(ref, fast, samples)):
        assert f["query"] == r["query"] and f["choices"] == r["choices"], f"item {i}"
        assert [tuple(a) for a in s["arguments"]] == [(r["query"], " " + c) for c in r["choices"]], f"item {i}"
        theirs = [float(x[0]) for x in s["filtered_resps"]]
        for name, lls, tol in (("fast", f["loglikelihoods"], FAST_ABS_TOL),
                               ("reference", r["loglikelihoods"], LL_ABS_TOL)):
            diff = float(np.abs(np.array(lls) - np.array(theirs)).max())
            worst[name] = max(worst[name], diff)
            assert diff <= tol, f"item {i}: {name} {lls} vs lm-eval {theirs}"
        assert f["pred"] == r["pred"] == int(np.argmax(theirs)), f"item {i}: acc's answer"
        assert f["pred_norm"] == r["pred_norm"], f"item {i}: acc_norm's answer"
        assert s["acc"] == r["acc"] and s["acc_norm"] == r["acc_norm"], f"item {i}"
    # real weights: the logits are far from flat, so the choices' scores are far apart
    spread = np.mean([max(r["loglikelihoods"]) - min(r["loglikelihoods"]) for r in ref])
    assert spread > 5.0
    assert fast_metrics["acc"] == ref_metrics["acc"] and fast_metrics["acc_norm"] == ref_metrics["acc_norm"]
    print(f"\n{N_ITEMS} real-text items: max |ll - lm-eval| fast {worst['fast']:.2g}, reference"
          f" {worst['reference']:.2g}; acc {ref_metrics['acc']:.3f} acc_norm {ref_metrics['acc_norm']:.3f};"
          f" mean spread of a choice's ll {spread:.1f} nats")
