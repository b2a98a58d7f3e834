"""The fast decode path (fastpath.py) against LitGPT's own forward, on CPU in fp32: the same logits at prefill and
at every decode step whatever the cache holds beyond each row's length, and through the engine the same greedy
tokens and log-probabilities as the reference path (reference.LitGPTPath), batched or one request at a time."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from llmhpc.serve import sampling
from llmhpc.serve.fastpath import FastPath, Graphs, batch_buckets, unsupported

pytestmark = pytest.mark.litgpt

SHAPES = {  # grouped queries and RMSNorm (Llama), multi-head with partial RoPE, LayerNorm, parallel residual (NeoX)
    "llama-gqa": dict(mlp_class_name="LLaMAMLP", norm_class_name="RMSNorm", bias=False, parallel_residual=False,
                      n_query_groups=2, rotary_percentage=1.0),
    "neox": dict(rotary_percentage=0.25),
}


def tiny_model(shape: str, max_batch: int):
    from litgpt import GPT, Config

    config = Config(name=f"t-{shape}", block_size=96, vocab_size=300, padded_vocab_size=320, n_layer=2, n_head=4,
                    n_embd=32, intermediate_size=64, **SHAPES[shape])
    torch.manual_seed(0)
    model = GPT(config).eval()
    model.set_kv_cache(batch_size=max_batch)
    for block in model.transformer.h:  # what a freed slot may hold: never attended
        block.attn.kv_cache.k.normal_(0, 100)
        block.attn.kv_cache.v.normal_(0, 100)
    return model


def plain_logits(model, ids: list[int], vocab: int) -> torch.Tensor:
    out = model(torch.tensor([ids]))[0].float()
    out[:, vocab:] = float("-inf")
    return out


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("kv_bucket", [1, 16, 1000])
@torch.inference_mode()
def test_prefill_and_decode_logits_equal_the_plain_forward(shape, kv_bucket):
    model, vocab = tiny_model(shape, 5), 300
    path = FastPath(model, [b.attn.kv_cache for b in model.transformer.h], vocab, kv_bucket=kv_bucket)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in (5, 17, 1, 9)]
    last, scored = path.prefill(prompts[1:], 1, [True, False, True])  # slots 1..3, one prompt left for later
    for r, p in enumerate(prompts[1:]):
        want = plain_logits(model, p, vocab)
        torch.testing.assert_close(last[r], want[-1], atol=1e-4, rtol=0)
        if r != 1 and len(p) > 1:
            torch.testing.assert_close(scored[r], want[:-1], atol=1e-4, rtol=0)
    assert scored[1] is None
    path.prefill(prompts[:1], 0, [False])
    seqs = [list(p) for p in prompts]
    for _ in range(6):  # every slot advances at its own length; batches of 4 then of the first 2 slots
        for live in (4, 2):
            nxt = torch.randint(0, vocab, (live,), generator=gen).tolist()
            logits = path.decode(nxt, [len(s) for s in seqs[:live]])
            for r in range(live):
                seqs[r].append(nxt[r])
                torch.testing.assert_close(logits[r], plain_logits(model, seqs[r], vocab)[-1], atol=1e-4, rtol=0)


def run(engine, bodies, one_at_a_time: bool) -> list[dict]:
    """Answers of the engine to the bodies, driven on this thread: all submitted at once, or each after the last."""
    from llmhpc.serve.schema import ProcessRequest

    answers = {}
    jobs = [engine.make_job(ProcessRequest(**b), lambda a, i=i: answers.__setitem__(i, a)) for i, b in enumerate(bodies)]
    with torch.inference_mode():
        for group in ([[j] for j in jobs] if one_at_a_time else [jobs]):
            for job in group:
                engine.submit(job)
            while engine.waiting or engine.active:
                with engine.cond:
                    admitted = engine._admit()
                engine.run_once(admitted)
    return [answers[i] for i in range(len(bodies))]


@pytest.fixture(scope="module")
def engines(tiny_checkpoint):
    from llmhpc.serve.cli import build_engine

    return {path: build_engine(tiny_checkpoint, "cpu", max_batch=4, path=path, kv_bucket=16)
            for path in ("fast", "reference")}


BODIES = [{"prompt": p, "temperature": 1e-7, "max_new_tokens": n, "top_k_per_token": k, "echo_prompt": e}
          for p, n, k, e in [("one two three four five six seven eight nine ten", 20, 3, False),
                             ("the", 7, 1, True), ("alpha beta gamma delta north south east west", 12, 5, False),
                             ("describe the data", 30, 2, False), ("ten nine", 3, 1, False)]]
BODIES += [{"prompt": "write a short list", "temperature": 0.9, "seed": 3, "num_return_sequences": 2,
            "max_new_tokens": 9, "top_k": 20}]


def same_answer(a: dict, b: dict) -> None:
    for x, y in zip(a["completions"], b["completions"], strict=True):
        assert [t["text"] for t in x["tokens"]] == [t["text"] for t in y["tokens"]] and x["text"] == y["text"]
        assert [t["logprob"] for t in x["tokens"]] == pytest.approx([t["logprob"] for t in y["tokens"]], abs=1e-4)
        for s, t in zip(x["tokens"], y["tokens"]):
            assert s["top_logprob"].keys() == t["top_logprob"].keys()
            assert list(s["top_logprob"].values()) == pytest.approx(list(t["top_logprob"].values()), abs=1e-4)


def test_fast_engine_answers_as_the_reference_batched_and_one_at_a_time(engines):
    assert engines["fast"].load()["path"] == "fast" and engines["reference"].load()["path"] == "reference"
    reference = run(engines["reference"], BODIES, one_at_a_time=True)
    batched, alone = run(engines["fast"], BODIES, one_at_a_time=False), run(engines["fast"], BODIES, one_at_a_time=True)
    assert engines["fast"].peak_batch == 4  # sequences of different lengths decoded in one step
    for want, got, single in zip(reference, batched, alone):
        same_answer(want, got)
        same_answer(want, single)


def test_stop_sequences_are_found_incrementally_as_in_the_whole_text(engines):
    full = run(engines["fast"], BODIES[:1], one_at_a_time=True)[0]["text"]
    for stop in (full[3:6], full[-4:], full[:2]):
        body = {**BODIES[0], "stop_sequences": ["never there", stop]}
        got = [run(engines[p], [body], one_at_a_time=True)[0] for p in ("fast", "reference")]
        assert got[0]["text"] == got[1]["text"] == full[:full.find(stop)]
        same_answer(got[1], got[0])


def test_extend_text_adds_up_to_the_whole_decode_across_split_characters():
    data = "aé😀b c".encode()
    pieces = [data[:1], data[1:2], data[2:3], data[3:5], data[5:7], data[7:8], data[8:]]

    def decode(ids):
        return b"".join(pieces[i] for i in ids).decode("utf-8", "replace")

    text, done = "", 0
    for n in range(1, len(pieces) + 1):
        new, done = sampling.extend_text(decode, list(range(n)), done, window=2)
        text += new
        assert text == decode(list(range(done)))
    assert text == "aé😀b c"


def test_buckets_widths_and_what_falls_back_to_the_reference(engines):
    assert batch_buckets(16) == [1, 2, 4, 8, 16] and batch_buckets(12) == [1, 2, 4, 8, 12] and batch_buckets(1) == [1]
    fast = engines["fast"].path
    assert fast.width(0) == 16 and fast.width(15) == 16 and fast.width(16) == 32
    assert fast.width(fast.max_len - 1) == fast.max_len
    from litgpt import Config

    assert unsupported(engines["fast"].model.config) is None
    assert "softcapping" in unsupported(Config(name="x", attention_logit_softcapping=50.0))


def test_step_times_and_the_decode_profile(tiny_checkpoint, tmp_path):
    from llmhpc.serve.cli import build_engine
    from llmhpc.serve.timing import PROFILE_AT

    engine = build_engine(tiny_checkpoint, "cpu", max_batch=2, profile_out=tmp_path / "profile.txt")
    short = [{**BODIES[4], "max_new_tokens": 1}] * PROFILE_AT  # prefills only
    run(engine, short + [{**BODIES[0], "max_new_tokens": PROFILE_AT + 3}], one_at_a_time=True)
    load = engine.load()
    assert load["decode_steps"]["1"] == PROFILE_AT + 2 and load["decode_ms_per_step"]["1"] > 0
    assert load["prefills"] == PROFILE_AT + 1 and load["prefill_tokens"] > 0 and load["cuda_graphs"] == 0
    text = (tmp_path / "profile.txt").read_text()
    assert text.count("## decode step, batch 1") == 1 and "Self CPU" in text
    prompt_tokens = len(engine.encode(BODIES[0]["prompt"]))
    assert text.count("## prefill of ") == 1 and f"## prefill of {prompt_tokens} prompt tokens" in text


class EagerGraphs(Graphs):
    """Graphs whose 'graph' reruns the eager step on the static buffers at each replay: the padding to batch
    buckets, the dummy rows in free slots and the static buffers checked on CPU (the capture itself needs a GPU)."""

    def _capture(self, batch, width):
        tokens, positions = self.inp[0, :batch], self.inp[1, :batch]
        out = self.path.step(tokens, positions, width)
        graph = SimpleNamespace(replay=lambda: out.copy_(self.path.step(tokens, positions, width)))
        self.graphs[(batch, width)] = (graph, out)
        return graph, out


def test_batch_buckets_and_static_buffers_of_the_graph_path_answer_as_the_reference(engines, monkeypatch):
    fast = engines["fast"]
    monkeypatch.setattr(fast.path, "graphs", EagerGraphs(fast.path))
    assert fast.warm_up() == len(batch_buckets(4)) * len(fast.path.graphs.widths())
    got = run(fast, BODIES, one_at_a_time=False)
    assert fast.load()["cuda_graphs"] == 3 * 16  # batches 1, 2, 4 x widths 16, 32, ..., 256
    for want, answer in zip(run(engines["reference"], BODIES, one_at_a_time=True), got):
        same_answer(want, answer)


@torch.inference_mode()
def test_compiled_pointwise_ops_give_the_same_logits():
    """--compile: RMSNorm, RoPE and SiLU x up through torch.compile (inductor; C++ on CPU, Triton on a GPU)."""
    model, vocab = tiny_model("llama-gqa", 2), 300
    path = FastPath(model, [b.attn.kv_cache for b in model.transformer.h], vocab, kv_bucket=16, compile_pointwise=True)
    prompts = [[1, 2, 3, 4, 5], [7, 8, 9]]
    last, _ = path.prefill(prompts, 0, [False, False])
    for r, p in enumerate(prompts):
        torch.testing.assert_close(last[r], plain_logits(model, p, vocab)[-1], atol=1e-4, rtol=0)
    for token in (11, 12):
        logits = path.decode([token, token], [len(p) for p in prompts])
        for r, p in enumerate(prompts):
            p.append(token)
            torch.testing.assert_close(logits[r], plain_logits(model, p, vocab)[-1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_decode_windows_answer_as_single_steps(tiny_checkpoint, path):
    """sync_every steps back to back, each step's tokens chosen on the device: the same greedy and seeded answers,
    stop sequences and lengths as one step per transfer, with sequences that finish inside a window."""
    from llmhpc.serve.cli import build_engine

    stopped = {**BODIES[0], "stop_sequences": [run(build_engine(tiny_checkpoint, "cpu", max_batch=4, path=path,
                                                                 sync_every=1), BODIES[:1], True)[0]["text"][4:7]]}
    bodies = BODIES + [stopped]
    answers = {k: run(build_engine(tiny_checkpoint, "cpu", max_batch=4, path=path, kv_bucket=16, sync_every=k),
                      bodies, one_at_a_time=False) for k in (1, 3, 8)}
    for one, three, eight in zip(*answers.values()):
        same_answer(one, three)
        same_answer(one, eight)
    assert len(answers[8][-1]["tokens"]) < BODIES[0]["max_new_tokens"]  # the stop cut inside a window


def test_a_window_runs_past_a_sequence_that_ends_at_the_last_cache_position(tiny_checkpoint):
    """A sequence filling its slot to max_seq_length finishes inside a long window of another: its later steps stay
    inside the cache (positions clamped) and both answers are those of single steps."""
    from llmhpc.serve.cli import build_engine

    engine = build_engine(tiny_checkpoint, "cpu", max_batch=2, kv_bucket=16, max_seq_length=64, sync_every=16)
    prompt = " ".join(["one"] * 80)
    ids = engine.encode(prompt)[:62]
    full = {"prompt": engine.decode(ids), "temperature": 1e-7}
    fits = len(engine.encode(full["prompt"]))
    bodies = [{**full, "max_new_tokens": 64 - fits}, {"prompt": "the", "temperature": 1e-7, "max_new_tokens": 20}]
    single = build_engine(tiny_checkpoint, "cpu", max_batch=2, kv_bucket=16, max_seq_length=64, sync_every=1)
    for want, got in zip(run(single, bodies, one_at_a_time=False), run(engine, bodies, one_at_a_time=False)):
        same_answer(want, got)
    assert engine.load()["decode_steps"]["2"] >= 1


def test_a_failed_compile_at_warm_up_leaves_the_eager_ops_and_the_graphs(tiny_checkpoint, monkeypatch, capsys):
    from llmhpc.serve import fastpath
    from llmhpc.serve.cli import build_engine

    engine = build_engine(tiny_checkpoint, "cpu", max_batch=2, kv_bucket=64, compile_pointwise="on")
    assert engine.path.compiled
    monkeypatch.setattr(engine.path, "graphs", EagerGraphs(engine.path))

    def no_compiler(*args, **kwargs):
        raise RuntimeError("InductorError: no C++ compiler")

    engine.path.rms = no_compiler
    assert engine.warm_up() == 2 * len(engine.path.graphs.widths())
    assert not engine.path.compiled and engine.path.rms is fastpath.rms
    assert "--compile off, it failed (RuntimeError: InductorError: no C++ compiler)" in capsys.readouterr().err
    same_answer(run(engine, BODIES[:1], True)[0], run(build_engine(tiny_checkpoint, "cpu", max_batch=2), BODIES[:1],
                                                       True)[0])


def test_with_compile_the_warm_up_leaves_nothing_to_compile_while_serving(tiny_checkpoint, monkeypatch):
    """Prefills of one row and of several, with and without echo, and decode steps of every batch bucket: all
    compiled at warm-up (a recompile while serving stalls every request for seconds)."""
    from llmhpc.serve.cli import build_engine

    engine = build_engine(tiny_checkpoint, "cpu", max_batch=4, kv_bucket=64, compile_pointwise="on")
    monkeypatch.setattr(engine.path, "graphs", EagerGraphs(engine.path))
    engine.warm_up()
    with torch._dynamo.config.patch(error_on_recompile=True):  # (monkeypatch's undo would hide the key)
        got = run(engine, BODIES, one_at_a_time=False)
    for want, answer in zip(run(build_engine(tiny_checkpoint, "cpu", max_batch=4), BODIES, True), got):
        same_answer(want, answer)
