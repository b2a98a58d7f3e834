"""`llmhpc-serve`'s engine on real trained weights (SmolLM2-135M-Instruct from the package registry,
tests/real_weights.py), CPU, fp32, where the logits are far from flat and a subtly wrong decode path changes the text:
on 16 real-text prompts (the starts of CPython manual paragraphs), the fast path batched gives the same greedy text as
LitGPT's own `generate` (litgpt.generate.base, the code of `litgpt generate`, on a model LitGPT loads itself), and the
same token log-probabilities and top alternatives as the serve reference path (LitGPT's forward and KV cache) within
1e-4; the prompt's echoed log-probabilities (what HELM scores) and the completion's agree with one plain forward over
the whole text."""

from __future__ import annotations

import pytest
import torch
from test_fastpath import run

pytestmark = [pytest.mark.registry, pytest.mark.litgpt]

N_PROMPTS = 16
NEW_TOKENS = 8
TOP = 3  # alternatives per token
LOGPROB_TOL = 1e-4


@pytest.fixture(scope="module")
def prompts():
    from llmhpc.sources import prose

    return [r["ctx"] for r in prose.eval_records(limit=N_PROMPTS)]


@pytest.fixture(scope="module")
def answers(real_model, prompts):
    """The engine's answers through each path, on one model loaded as `llmhpc-serve` loads it: every request
    submitted at once to 8 slots (sequences of different lengths in one decode step, slots refilled as they end)."""
    from llmhpc.serve.cli import build_engine
    from llmhpc.serve.engine import Engine

    _, lit_dir = real_model
    bodies = [{"prompt": p, "temperature": 0.0, "max_new_tokens": NEW_TOKENS, "top_k_per_token": TOP,
               "echo_prompt": i % 2 == 1} for i, p in enumerate(prompts)]
    fast = build_engine(lit_dir, "cpu", "32-true", max_batch=8, path="fast", kv_bucket=16)
    out = {"fast": run(fast, bodies, one_at_a_time=False)}
    reference = Engine(fast.model, fast.tokenizer, max_batch=8, path="reference")  # its own KV cache
    out["reference"] = run(reference, bodies, one_at_a_time=False)
    for path, engine in (("fast", fast), ("reference", reference)):
        assert engine.load()["path"] == path and engine.peak_batch == 8
    return out


@pytest.fixture(scope="module")
def litgpt_model(real_model):
    """The checkpoint as `litgpt generate` loads it: LitGPT's Config, GPT and Tokenizer, its state dict as saved."""
    from litgpt import GPT, Config, Tokenizer

    _, lit_dir = real_model
    model = GPT(Config.from_file(lit_dir / "model_config.yaml"))
    model.load_state_dict(torch.load(lit_dir / "lit_model.pth", weights_only=True, map_location="cpu"))
    return model.eval(), Tokenizer(lit_dir)


@pytest.fixture(scope="module")
def litgpt_ids(litgpt_model, prompts) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, greedy ids) per prompt from litgpt.generate.base.generate, EOS left out as the server leaves it."""
    from litgpt.generate.base import generate

    model, tokenizer = litgpt_model
    encoded = [tokenizer.encode(p) for p in prompts]
    model.max_seq_length = max(len(ids) for ids in encoded) + NEW_TOKENS
    model.set_kv_cache(batch_size=1)
    out = []
    for ids in encoded:
        new = generate(model, ids, len(ids) + NEW_TOKENS, temperature=0.0, eos_id=tokenizer.eos_id,
                       include_prompt=False)
        out.append((ids.tolist(), [i for i in new.tolist() if i != tokenizer.eos_id]))
    model.clear_kv_cache()
    return out


def completion(answer: dict, prompt: str, echo: bool) -> str:
    return answer["text"][len(prompt):] if echo else answer["text"]


def test_fast_path_greedy_text_is_litgpt_generate_s(answers, litgpt_model, litgpt_ids, prompts):
    _, tokenizer = litgpt_model
    theirs = [tokenizer.decode(torch.tensor(new, dtype=torch.long)) for _, new in litgpt_ids]
    fast, ref = answers["fast"], answers["reference"]
    assert [completion(a, p, i % 2 == 1) for i, (a, p) in enumerate(zip(fast, prompts))] == theirs
    assert [a["text"] for a in ref] == [a["text"] for a in fast]
    assert len(set(theirs)) == len(theirs) and all(t.strip() for t in theirs), theirs  # each prompt its own text


def test_fast_path_log_probabilities_are_the_reference_path_s(answers):
    worst = 0.0
    for i, (f, r) in enumerate(zip(answers["fast"], answers["reference"])):
        assert [t["text"] for t in f["tokens"]] == [t["text"] for t in r["tokens"]], f"prompt {i}"
        for s, t in zip(f["tokens"], r["tokens"]):
            assert s["top_logprob"].keys() == t["top_logprob"].keys(), f"prompt {i}"
            ours = [s["logprob"], *s["top_logprob"].values()]
            want = [t["logprob"], *t["top_logprob"].values()]
            assert ours == pytest.approx(want, abs=LOGPROB_TOL), f"prompt {i}, token {s['text']!r}"
            worst = max(worst, max(abs(a - b) for a, b in zip(ours, want)))
    print(f"\nmax |fast - reference| log-probability {worst:.2g}")


@torch.inference_mode()
def test_log_probabilities_are_one_plain_forward_s(answers, litgpt_model, litgpt_ids):
    """The echoed prompt's tokens (scored at prefill) and the generated ones (at decode), against log_softmax of
    LitGPT's forward over prompt + completion at once, no KV cache."""
    model, tokenizer = litgpt_model
    for i, (answer, (ids, new)) in enumerate(zip(answers["fast"], litgpt_ids)):
        full = ids + new
        logp = torch.log_softmax(model(torch.tensor([full]))[0].float(), -1)
        want = logp[torch.arange(len(full) - 1), torch.tensor(full[1:])].tolist()  # token t given tokens < t
        scored = [t["logprob"] for t in answer["tokens"]]
        if i % 2:  # echoed: the prompt's tokens from the first after BOS, the first with no context scored 0
            first = 1 if tokenizer.use_bos and ids[0] == tokenizer.bos_id else 0
            echoed, scored = scored[:len(ids) - first], scored[len(ids) - first:]
            assert first or echoed[0] == 0.0
            assert echoed[1 - first:] == pytest.approx(want[:len(ids) - 1], abs=LOGPROB_TOL), f"prompt {i}"
        assert scored == pytest.approx(want[len(ids) - 1:], abs=LOGPROB_TOL), f"prompt {i}"
