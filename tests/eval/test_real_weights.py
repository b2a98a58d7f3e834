"""The three scorers on real trained weights, where the logits are not flat and a subtly wrong fast path shows:
the fast scorer (llmhpc.eval.run) and the reference scorer (the evaluate stage's own) on the LitGPT checkpoint, and
lm-evaluation-harness's HF backend with its real `hellaswag` task on the Hugging Face directory it was converted
from, all in float32 on CPU, over real-text items (CPython's manual, tests/sources/test_prose.py). Per item: the same
query and choices, the same acc and acc_norm answer, and every choice's log-likelihood within 1e-4 nats of lm-eval's
(each token's log-probability through torch.log_softmax, as lm-eval takes it: logit - logsumexp rounds differently in
float32 over SmolLM2's 49,152 logits, up to 8.4e-4 nats on these sums of 30 to 150).

And the real-text set itself: a tiny random model of the same tokenizer scores near chance (25 %), the trained model
far above it, each judged by a binomial test rather than a fixed figure.

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


CHANCE = 0.25  # four endings
ALPHA = 1e-3  # of each binomial test: how unlikely the result must be before it counts as (not) chance
N_CHANCE_ITEMS = 32  # the trained model's items: the example run's evaluation limit (config/examples/cpu-real.yaml)


def tiny_random_like(lit_dir: Path, out: Path, seed: int = 0) -> Path:
    """A random-initialised 2-layer Llama of LitGPT's own init, with the trained model's tokenizer and vocabulary:
    the same tokens are scored, only the weights differ."""
    import shutil

    import torch
    from litgpt import GPT, Config
    from litgpt.utils import save_config

    big = Config.from_file(lit_dir / "model_config.yaml")
    config = Config(name="tiny-random", block_size=big.block_size, vocab_size=big.vocab_size,
                    padded_vocab_size=big.padded_vocab_size, n_layer=2, n_head=4, n_query_groups=2, n_embd=64,
                    intermediate_size=128, mlp_class_name="LLaMAMLP", norm_class_name="RMSNorm", bias=False,
                    parallel_residual=False, rotary_percentage=1.0)
    out.mkdir(parents=True)
    save_config(config, out)
    torch.manual_seed(seed)
    torch.save(GPT(config).state_dict(), out / "lit_model.pth")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(lit_dir / name, out / name)
    return out


def test_a_random_model_scores_near_chance_on_the_real_text_set_and_the_trained_one_far_above(real_model, tmp_path):
    """The random model over the whole generated set (it costs little), the trained one over its first 32 items:
    a set whose right endings stood out by length or wording would let the random model off chance, and one the
    trained model cannot read would keep it near chance."""
    from scipy.stats import binomtest

    from llmhpc.eval.run import score_file
    from llmhpc.sources import prose
    from llmhpc.stages.data import write_jsonl

    _, lit_dir = real_model
    records = prose.eval_records()
    assert [r["ctx"] for r in records[:N_CHANCE_ITEMS]] == [r["ctx"] for r in prose.eval_records(N_CHANCE_ITEMS)]
    write_jsonl(tmp_path / "all.jsonl", records)
    write_jsonl(tmp_path / "first.jsonl", records[:N_CHANCE_ITEMS])
    random_dir = tiny_random_like(lit_dir, tmp_path / "random")
    options = dict(precision="32-true", bos="false", device="cpu", compile="false")
    score_file(random_dir, tmp_path / "all.jsonl", tmp_path / "random.jsonl", tmp_path / "random.json", **options)
    score_file(lit_dir, tmp_path / "first.jsonl", tmp_path / "real.jsonl", tmp_path / "real.json", **options)
    random_rows, real_rows = _rows(tmp_path / "random.jsonl"), _rows(tmp_path / "real.jsonl")
    assert len(random_rows) == len(records) and len(real_rows) == N_CHANCE_ITEMS

    lines = []
    for metric in ("acc", "acc_norm"):
        k_random = sum(int(r[metric]) for r in random_rows)
        k_real = sum(int(r[metric]) for r in real_rows)
        near = binomtest(k_random, len(random_rows), CHANCE).pvalue
        above = binomtest(k_real, N_CHANCE_ITEMS, CHANCE, alternative="greater").pvalue
        assert near > ALPHA, f"random model {metric} {k_random}/{len(random_rows)}: not chance (p {near:.2g})"
        assert above < ALPHA, f"trained model {metric} {k_real}/{N_CHANCE_ITEMS}: not above chance (p {above:.2g})"
        lines.append(f"{metric}: random {k_random}/{len(random_rows)} (p {near:.2g} of chance or further), trained"
                     f" {k_real}/{N_CHANCE_ITEMS} (p {above:.2g} of chance doing as well)")
    print("\n" + "\n".join(lines))


N_FLOAT8_ITEMS = 24


def test_float8_scoring_keeps_the_real_models_answers(real_model, monkeypatch):
    """evaluate.float8 on real weights, where a wrong float8 path cannot hide behind flat logits: the blocks'
    linear layers in torchao's float8 (rowwise scales; its FP8-tensor-core check lifted, as in test_float8.py) move
    each choice's summed log-likelihood by far less than the gap between an item's two best choices, and keep the
    answers of the float32 scorer. Measured here (SmolLM2-135M, 24 real-text items): median change 0.73 nats
    against a median gap of 9.2; 23 of 24 pred and 24 of 24 pred_norm the same (84 items: acc 52.4 % against
    53.6 %, acc_norm 56.0 % both; bf16 itself gives float32's answers on all 84)."""
    import statistics

    import torchao.quantization.quant_api as quant_api

    from llmhpc.eval import float8
    from llmhpc.eval.fast import score_items_fast
    from llmhpc.eval.loading import batch_encoder, load_model_part, load_tokenizer
    from llmhpc.sources import prose

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    _, lit_dir = real_model
    docs = prose.eval_records(limit=N_FLOAT8_ITEMS)
    encode = batch_encoder(load_tokenizer(lit_dir))
    reference, _ = load_model_part(lit_dir, "32-true", "cpu")
    rows32 = score_items_fast(reference, None, docs, None, "cpu", encode_batch=encode, compile=False)
    model, _ = load_model_part(lit_dir, "bf16-true", "cpu")
    assert float8.quantize_blocks(model.transformer.h) == 5 * model.config.n_layer
    rows8 = score_items_fast(model, None, docs, None, "cpu", encode_batch=encode, compile=False)

    moved = statistics.median(abs(a - b) for r, f in zip(rows32, rows8)
                              for a, b in zip(r["loglikelihoods"], f["loglikelihoods"]))
    gap = statistics.median(sorted(r["loglikelihoods"])[-1] - sorted(r["loglikelihoods"])[-2] for r in rows32)
    assert 0 < moved < gap / 5, (moved, gap)
    assert sum(r["pred"] == f["pred"] for r, f in zip(rows32, rows8)) >= N_FLOAT8_ITEMS - 2
    assert sum(r["pred_norm"] == f["pred_norm"] for r, f in zip(rows32, rows8)) >= N_FLOAT8_ITEMS - 2
