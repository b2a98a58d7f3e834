"""Cross-check of our HellaSwag scoring (llmhpc.hellaswag) against lm-evaluation-harness itself.

One tiny random GPT-NeoX model is written in Hugging Face format and converted to LitGPT with litgpt's real
converter. The same items (the first ones of the embedded eval set, some with WikiHow [header]/[title] tags)
are scored twice:
- by ours: llmhpc.hellaswag.evaluate on the LitGPT checkpoint;
- by lm-eval: simple_evaluate with its real HF model class (HFLM) on the HF directory and its real
  `hellaswag` task (lm_eval/tasks/hellaswag/hellaswag.yaml, included from a local YAML that only points the
  dataset at the local jsonl), so lm-eval's own process_docs, doc_to_text, request building, tokenization
  and acc/acc_norm metrics are used.
Per item the queries, choices, request strings, per-choice log-likelihoods and chosen answers must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

pytestmark = [pytest.mark.litgpt]

N_ITEMS = 40
LL_ABS_TOL = 1e-3  # both sides run in float32 on CPU
TASK_NAME = "hellaswag_llmhpc_crosscheck"
EMBEDDED = REPO / "src" / "llmhpc" / "embedded" / "hellaswag.jsonl"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny HF GPT-NeoX model and its LitGPT conversion (once per module: ~30 s)."""
    from llmhpc.sources.tiny import write_tiny_model
    from llmhpc.stages.convert import convert

    root = tmp_path_factory.mktemp("crosscheck_model")
    hf_dir, lit_dir = root / "hf", root / "lit"
    write_tiny_model(hf_dir, "pythia-14m", 1024, 42)
    convert(hf_dir, lit_dir, "pythia-14m", log=lambda *a, **k: None)
    return hf_dir, lit_dir


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory):
    lines = [line for line in EMBEDDED.read_text(encoding="utf-8").splitlines() if line.strip()][:N_ITEMS]
    assert len(lines) == N_ITEMS
    path = tmp_path_factory.mktemp("crosscheck_data") / "hellaswag_subset.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_ours(lit_dir: Path, eval_file: Path, out_dir: Path) -> tuple[list[dict], dict]:
    from llmhpc.eval.reference import evaluate

    preds, metrics_path = out_dir / "predictions.jsonl", out_dir / "metrics.json"
    metrics = evaluate(lit_dir, eval_file, preds, metrics_path, precision="32-true", batch_size=8,
                       bos="false", device="cpu", log=lambda *a, **k: None)
    rows = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines()]
    return rows, metrics


def run_lmeval(hf_dir: Path, eval_file: Path, work_dir: Path, monkeypatch):
    """lm-eval's own hellaswag task on the local jsonl, through its HFLM model class, offline."""
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_DATASETS_TRUST_REMOTE_CODE", "0")
    import datasets.config
    for attr in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):  # read at import time: patch the live values too
        if hasattr(datasets.config, attr):
            monkeypatch.setattr(datasets.config, attr, True)

    import lm_eval
    from lm_eval.tasks import TaskManager

    upstream = Path(lm_eval.__file__).parent / "tasks" / "hellaswag" / "hellaswag.yaml"
    assert upstream.is_file(), upstream
    task_dir = work_dir / "tasks"
    task_dir.mkdir()
    (task_dir / f"{TASK_NAME}.yaml").write_text(
        f"include: {json.dumps(str(upstream))}\n"
        f"task: {TASK_NAME}\n"
        "dataset_path: json\n"
        "dataset_name: null\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    validation: {json.dumps(str(eval_file))}\n"
        f"  cache_dir: {json.dumps(str(work_dir / 'hf_datasets_cache'))}\n"
        "training_split: null\n"
        "validation_split: validation\n"
        "test_split: null\n",
        encoding="utf-8",
    )
    task_manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    task = task_manager.load([TASK_NAME])["tasks"][TASK_NAME]
    # the task really is lm-eval's hellaswag: its process_docs comes from lm_eval/tasks/hellaswag/utils.py
    assert task.config.process_docs.__module__ == "lm_eval.tasks.hellaswag.utils"
    assert task.config.output_type == "multiple_choice"
    assert [m["metric"] for m in task.config.metric_list] == ["acc", "acc_norm"]

    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={hf_dir},dtype=float32",
        tasks=[task],
        device="cpu",
        batch_size=8,
        num_fewshot=0,
        log_samples=True,
        bootstrap_iters=0,
        use_cache=None,
    )
    assert results is not None
    return task, results


def test_hellaswag_matches_lm_eval(models, eval_file, tmp_path, monkeypatch):
    from llmhpc.eval.hellaswag import doc_to_request

    hf_dir, lit_dir = models
    docs = [json.loads(line) for line in eval_file.read_text(encoding="utf-8").splitlines()]
    tagged = [d for d in docs if "[" in " ".join([d["activity_label"], d["ctx_a"], d["ctx_b"], *d["endings"]])]
    assert tagged, "the subset must contain [header]/[title] tags so that preprocessing is exercised"

    ours, our_metrics = run_ours(lit_dir, eval_file, tmp_path)
    task, results = run_lmeval(hf_dir, eval_file, tmp_path, monkeypatch)

    samples = sorted(results["samples"][task.config.task], key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == list(range(N_ITEMS))
    assert len(ours) == N_ITEMS

    max_diff = 0.0
    for i, (row, sample) in enumerate(zip(ours, samples)):
        doc = sample["doc"]
        their_query = task.doc_to_text(doc)
        their_choices = task.doc_to_choice(doc)
        assert their_query == row["query"], f"item {i}: query"
        assert their_choices == row["choices"], f"item {i}: choices"
        assert int(task.doc_to_target(doc)) == row["gold"], f"item {i}: gold"
        # the exact strings lm-eval scored: (context, target_delimiter + choice) per choice
        assert [tuple(a) for a in sample["arguments"]] == [(row["query"], " " + c) for c in row["choices"]], \
            f"item {i}: request strings"

        their_lls = [float(r[0]) for r in sample["filtered_resps"]]
        assert len(their_lls) == len(row["loglikelihoods"])
        diffs = np.abs(np.array(their_lls) - np.array(row["loglikelihoods"]))
        max_diff = max(max_diff, float(diffs.max()))
        assert diffs.max() <= LL_ABS_TOL, f"item {i}: log-likelihoods {their_lls} vs ours {row['loglikelihoods']}"

        # chosen answers, computed from lm-eval's numbers as lm-eval's MultipleChoiceTask metric does
        completion_len = np.array([float(len(c)) for c in their_choices])
        assert int(np.argmax(their_lls)) == row["pred"], f"item {i}: pred"
        assert int(np.argmax(np.array(their_lls) / completion_len)) == row["pred_norm"], f"item {i}: pred_norm"
        assert sample["acc"] == row["acc"], f"item {i}: acc"
        assert sample["acc_norm"] == row["acc_norm"], f"item {i}: acc_norm"

    # the tags were really stripped (by both, since the queries are equal)
    tagged_ids = [i for i, d in enumerate(docs) if d in tagged]
    assert all("[" not in ours[i]["query"] and "[" not in " ".join(ours[i]["choices"]) for i in tagged_ids)
    assert all(ours[i]["query"] == doc_to_request(docs[i])[0] for i in tagged_ids)

    agg = results["results"][task.config.task]
    assert agg["acc,none"] == pytest.approx(our_metrics["acc"], abs=1e-12)
    assert agg["acc_norm,none"] == pytest.approx(our_metrics["acc_norm"], abs=1e-12)
    assert our_metrics["items"] == N_ITEMS
    print(f"\n{N_ITEMS} items x {len(ours[0]['choices'])} choices; max |ll ours - ll lm-eval| = {max_diff:.3g};"
          f" acc {our_metrics['acc']:.4f} acc_norm {our_metrics['acc_norm']:.4f} (both sides)")
