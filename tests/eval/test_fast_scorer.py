"""The fast HellaSwag scorer in this process: the same rows as the reference scorer (tiny LitGPT models in fp32),
its packed rows, mask, schedule, sharding, BOS decision, batch tokenizer, part files and accuracy guard."""

from __future__ import annotations

import json

import pytest
import torch

from llmhpc.eval.schedule import Item, build_rows, encode_batch_from, make_batches, shard_positions, tokenize_items

# unmarked tests are the unit tier (conftest); those that build and run LitGPT models are marked litgpt
LL_TOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer():
    from llmhpc.sources.tiny import train_tokenizer
    return train_tokenizer(512)


@pytest.fixture(scope="module")
def docs():
    from llmhpc.sources import embedded
    return embedded.eval_records()[:40]


def tiny_gpt(family: str, block_size: int = 256):
    from litgpt import GPT, Config
    shape = dict(block_size=block_size, vocab_size=512, padded_vocab_size=512, n_layer=2, n_head=4, n_embd=64,
                 intermediate_size=128)
    if family == "llama":
        shape.update(mlp_class_name="LLaMAMLP", norm_class_name="RMSNorm", bias=False, parallel_residual=False,
                     n_query_groups=2)
    else:
        shape.update(rotary_percentage=0.25)
    torch.manual_seed(0)
    model = GPT(Config(name=f"tiny-{family}", **shape)).eval()
    model.max_seq_length = block_size
    return model


def assert_same_rows(ref: list[dict], fast: list[dict]) -> float:
    assert len(ref) == len(fast)
    worst = 0.0
    for r, f in zip(ref, fast):
        assert {k: v for k, v in r.items() if k != "loglikelihoods"} == \
            {k: v for k, v in f.items() if k != "loglikelihoods"}, r["index"]
        diff = max(abs(a - b) for a, b in zip(r["loglikelihoods"], f["loglikelihoods"]))
        assert diff <= LL_TOL, (r["index"], r["loglikelihoods"], f["loglikelihoods"])
        worst = max(worst, diff)
    return worst


@pytest.mark.litgpt
@pytest.mark.parametrize("family,block_size,budget,bos,n", [
    ("llama", 256, 400, 0, 40),      # every item one packed row, many batches (item lengths 60-120 tokens)
    ("neox", 256, 100000, None, 40),  # one batch, no BOS, partial rotary and parallel residual
    ("llama", 40, 300, 0, 12),       # context + endings longer than the model: items split over rows
    ("llama", 22, 64, 0, 12),        # a request longer than the model: left-truncated as lm-eval does
])
def test_same_rows_as_reference(tokenizer, docs, family, block_size, budget, bos, n):
    from llmhpc.eval.fast import score_items_fast
    from llmhpc.eval.reference import score_items

    model = tiny_gpt(family, block_size)
    encode = lambda s: tokenizer.encode(s).ids  # noqa: E731
    ref = score_items(model, encode, docs[:n], 16, bos, "cpu")
    fast = score_items_fast(model, encode, docs[:n], bos, "cpu", token_budget=budget)
    assert_same_rows(ref, fast)


@pytest.mark.litgpt
@pytest.mark.parametrize("family", ["llama", "neox"])
def test_compiled_blocks_give_the_same_rows_with_one_graph(tokenizer, docs, family):
    """The compiled path (torch.compile of the block forward, here with the aot_eager backend: the same graph
    capture and functionalisation as on GPU, eager kernels) gives the reference rows; the stand-in warm-up in a
    thread compiles the one graph that every block and every batch shape of the scoring then reuses."""
    import threading

    from torch._dynamo.utils import counters

    from llmhpc.eval.fast import score_items_fast
    from llmhpc.eval.reference import score_items
    from llmhpc.eval.warm import warm_up

    torch._dynamo.reset()
    counters.clear()
    model = tiny_gpt(family)
    shapes = ((3, 37), (2, 32))  # 32: the mask's width is a multiple of 16 (one layout for every width)
    warm = threading.Thread(target=warm_up, args=(model.config, "cpu", torch.float32, "aot_eager", shapes))
    warm.start()
    warm.join()
    assert counters["stats"]["unique_graphs"] == 1
    encode = lambda s: tokenizer.encode(s).ids  # noqa: E731
    ref = score_items(model, encode, docs, 16, 0, "cpu")
    fast = score_items_fast(model, encode, docs, 0, "cpu", token_budget=400, compile="aot_eager")
    assert_same_rows(ref, fast)
    assert counters["stats"]["unique_graphs"] == 1, "a block or batch shape recompiled"


@pytest.mark.litgpt
def test_batches_run_eager_until_the_compiled_code_is_ready(tokenizer, docs):
    from llmhpc.eval.fast import Collector, Stage, plan, run_stage
    from llmhpc.eval.schedule import tokenize_items

    model = tiny_gpt("llama")
    items = tokenize_items(docs[:12], encode_batch_from(lambda s: tokenizer.encode(s).ids), 0)
    _, batches = plan(items, 256, 150)
    asked = []
    stage = Stage(model, "cpu", compile="aot_eager", compiled_ready=lambda: asked.append(1) or len(asked) > 2)
    collect = Collector(items)
    run_stage(stage, batches, collect)
    assert len(batches) > 3 and stage.eager_batches == 2 and len(collect.rows) == 12


def test_compile_modes():
    from llmhpc.eval.fast import compile_backend

    assert compile_backend("auto", "cpu") is None and compile_backend("false", "cuda") is None
    assert compile_backend("auto", "cuda") == "inductor" and compile_backend("true", "cpu") == "inductor"
    assert compile_backend("aot_eager", "cpu") == "aot_eager"


def test_auto_compiles_on_a_gpu_only_where_the_planned_scoring_pays_it_back():
    from llmhpc.eval.fast import compile_pays

    small = compile_pays("auto", "cuda", parameters=135_000_000, characters=192 * 700)  # the embedded set, 135M
    assert small[0] is None and small[1].startswith("eager: ~0.0 s")
    whole = compile_pays("auto", "cuda", parameters=6_740_000_000, characters=10_042 * 700)  # HellaSwag, 7B
    assert whole[0] == "inductor" and "pays back" in whole[1]
    assert compile_pays("true", "cuda", 1000, 10)[0] == "inductor"  # asked for: compiled whatever the work
    assert compile_pays("auto", "cpu", 6_740_000_000, 10**9)[0] is None


def test_packed_row_layout():
    item = Item(7, "q", ["a", "bb"], 1, context=[1, 2, 3], continuations=[[4, 5], [6]])
    (row,) = build_rows([item], max_len=64)
    assert row.tokens == [1, 2, 3, 4]  # the last token of each ending is only a target
    assert row.positions == [0, 1, 2, 3]
    assert row.segments == [0, 0, 0, 1]
    assert row.targets == [(0, [2, 3], [4, 5]), (1, [2], [6])]


def test_mask_keeps_endings_apart():
    from llmhpc.eval.fast import attention_mask

    seg = torch.tensor([[0, 0, 1, 1, 2, 2, -1]])
    allowed = attention_mask(seg, torch.float32)[0, 0] == 0
    assert allowed[3].tolist() == [True, True, True, True, False, False, False]
    assert allowed[5].tolist() == [True, True, False, False, True, True, False]
    assert allowed[6, :2].all() and not allowed[6, 2:6].any()  # padding sees the context only (and itself)
    assert not allowed.triu(1).any()  # causal


def test_schedule_budget_and_long_rows():
    items = [Item(i, "q", ["a"], 0, [1] * n, [[2, 3]]) for i, n in enumerate([5, 50, 7, 7, 30, 6, 200])]
    batches = make_batches(build_rows(items, max_len=512), token_budget=64)
    rows = [r for b in batches for r in b]
    assert sorted(r.item for r in rows) == list(range(len(items)))
    for b in batches:
        assert len(b) == 1 or len(b) * len(b[0]) <= 64
        assert all(len(r) <= len(b[0]) for r in b)
    assert [len(b[0]) for b in batches][0] == 201  # longer than the budget: a batch of its own


def test_shards_are_disjoint_complete_and_balanced():
    items = [Item(i, "q", ["a"], 0, [1] * (10 + i % 37), [[2]]) for i in range(101)]
    shards = [[items[i] for i in shard_positions([it.unique_tokens for it in items], 3, s)] for s in range(3)]
    assert sorted(it.index for sh in shards for it in sh) == list(range(101))
    work = [sum(it.unique_tokens for it in sh) for sh in shards]
    assert max(work) - min(work) <= 47


def test_chunks_cover_every_item_once_and_grow():
    from llmhpc.eval.schedule import chunk_bounds

    assert chunk_bounds(0) == []
    assert chunk_bounds(10, 4) == [(0, 4), (4, 10)]
    bounds = chunk_bounds(10042)
    assert bounds[0] == (0, 256) and bounds[-1][1] == 10042
    assert all(a[1] == b[0] and b[1] - b[0] <= 2 * (a[1] - a[0]) for a, b in zip(bounds, bounds[1:]))


def test_shard_positions_by_size_before_tokenising():
    from llmhpc.eval.schedule import doc_size, shard_positions

    sizes = [5, 100, 7, 60, 61, 3, 90, 8]
    shards = [shard_positions(sizes, 3, s) for s in range(3)]
    assert sorted(sum(shards, [])) == list(range(len(sizes)))
    loads = [sum(sizes[i] for i in sh) for sh in shards]
    assert max(loads) - min(loads) <= max(sizes) and all(sh == sorted(sh) for sh in shards)
    doc = {"ctx_a": "A man is", "ctx_b": "sitting", "endings": ["a", "bb", "ccc", "dddd"], "label": 0,
           "activity_label": "X"}
    assert doc_size(doc) > len("A man is") + 10


def test_tokenize_items_moves_trailing_space_like_encode_pair():
    from llmhpc.eval.hellaswag import encode_pair

    enc = lambda s: [ord(c) for c in s]  # noqa: E731
    doc = {"activity_label": "A", "ctx_a": "b", "ctx_b": "", "endings": ["x", "yy"], "label": "1"}
    (item,) = tokenize_items([doc], encode_batch_from(enc), bos_id=9)
    ctx, cont = encode_pair(enc, item.query, " " + "x")
    assert item.context == [9] + ctx and item.continuations[0] == cont


def test_batch_encoder_and_bos(tmp_path, tokenizer):
    from litgpt import Tokenizer

    from llmhpc.eval.loading import batch_encoder, resolve_bos

    tokenizer.save(str(tmp_path / "tokenizer.json"))
    cfg = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = Tokenizer(tmp_path)
    texts = ["Making tea: a man", " boils water.", "", "<|endoftext|> x <|endoftext|>"]
    assert batch_encoder(tok)(texts) == [tok.encode(t, bos=False).tolist() for t in texts]
    assert resolve_bos(tok, tmp_path, "auto")[0] is None  # the tokenizer adds no BOS
    assert resolve_bos(tok, tmp_path, "true")[0] == 0
    assert resolve_bos(tok, tmp_path, "false")[0] is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**cfg, "add_bos_token": True}))
    bos_id, why = resolve_bos(Tokenizer(tmp_path), tmp_path, "auto")
    assert bos_id == 0 and "add_bos_token" in why


def test_block_ranges():
    from llmhpc.eval.parallel import block_ranges

    assert block_ranges(60, 4) == [(0, 15), (15, 30), (30, 45), (45, 60)]
    assert block_ranges(10, 4) == [(0, 2), (2, 5), (5, 8), (8, 10)]
    assert block_ranges(3, 1) == [(0, 3)]


def test_parts_resume_and_fingerprint(tmp_path):
    from llmhpc.eval import store

    preds = tmp_path / "p.jsonl"
    fp = {"checkpoint": "c", "items": 3}
    assert store.read_parts(preds, fp) == []
    w = store.PartWriter(preds, 1)
    w({"index": 2, "query": "q2"})
    w({"index": 0, "query": "q0"})
    w.close()
    with open(store.part_path(preds, 1), "a") as fh:
        fh.write('{"index": 1, "que')  # the line a kill cut off
    assert [r["index"] for r in store.read_parts(preds, fp, ["q0", "q1", "q2"])] == [0, 2]
    assert [r["index"] for r in store.read_parts(preds, fp, ["q0", "q1", "changed"])] == [0]
    assert store.read_parts(preds, {"checkpoint": "other", "items": 3}) == []  # another evaluation's parts go
    assert not store.part_path(preds, 1).exists()


def test_accuracy_guard(tmp_path):
    from llmhpc.eval.guard import AccuracyGuardError, agreement, check_metrics

    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"acc": 0.60, "acc_norm": 0.80}))
    report = check_metrics({"acc": 0.604, "acc_norm": 0.797}, ref)
    assert report["ok"] and report["acc_norm"]["delta_pt"] == pytest.approx(-0.3)
    with pytest.raises(AccuracyGuardError, match=r"acc_norm 79\.00 vs reference 80\.00 \(-1\.00 pt\)"):
        check_metrics({"acc": 0.60, "acc_norm": 0.79}, ref)
    a = [{"index": i, "pred": i % 2, "pred_norm": 0, "loglikelihoods": [-1.0, -2.0]} for i in range(4)]
    b = [dict(r, pred=0, loglikelihoods=[-1.0, -2.5]) for r in a]
    got = agreement(a, b)
    assert got["items"] == 4 and got["pred_agreement"] == 0.5 and got["pred_norm_agreement"] == 1.0
    assert got["max_abs_loglikelihood_diff"] == 0.5 and got["differing_items"] == [1, 3]


@pytest.mark.litgpt
def test_reads_hugging_face_llama_weights_directly(tmp_path, tokenizer, docs):
    """A Hugging Face Llama directory (safetensors + model_config.yaml) scores as transformers computes it."""
    import transformers
    from litgpt import Config
    from litgpt.utils import save_config

    from llmhpc.eval.fast import score_items_fast
    from llmhpc.eval.hellaswag import doc_to_request, encode_pair
    from llmhpc.eval.loading import load_model_part

    hf_cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    save_config(Config(name="tiny-hf-llama", block_size=256, vocab_size=512, padded_vocab_size=512, n_layer=2,
                       n_head=4, n_query_groups=2, n_embd=64, intermediate_size=128, bias=False,
                       parallel_residual=False, norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP",
                       norm_eps=1e-5, rotary_percentage=1.0), tmp_path)
    model, _ = load_model_part(tmp_path, "32-true", "cpu")
    encode = lambda s: tokenizer.encode(s).ids  # noqa: E731
    fast = score_items_fast(model, encode, docs[:6], None, "cpu")
    for doc, row in zip(docs[:6], fast):
        query, choices, _ = doc_to_request(doc)
        for choice, ll in zip(choices, row["loglikelihoods"]):
            ctx, cont = encode_pair(encode, query, " " + choice)
            with torch.no_grad():
                logits = hf(torch.tensor([ctx + cont][:1])[:, :-1]).logits.float()
            logp = torch.log_softmax(logits[0, len(ctx) - 1:], -1).gather(1, torch.tensor(cont)[:, None]).sum()
            assert abs(logp.item() - ll) <= LL_TOL


@pytest.mark.litgpt
def test_weights_that_do_not_match_the_config_are_named(tmp_path):
    from llmhpc.eval.loading import load_model_part
    from llmhpc.eval.tinyckpt import write_tiny_litgpt

    ckpt = write_tiny_litgpt(tmp_path / "ckpt")
    state = torch.load(ckpt / "lit_model.pth", weights_only=True)
    del state["transformer.h.1.attn.proj.weight"]
    torch.save(state, ckpt / "lit_model.pth")
    with pytest.raises(KeyError, match=r"missing \['transformer\.h\.1\.attn\.proj\.weight'\]"):
        load_model_part(ckpt, "32-true", "cpu")
    model, n_params = load_model_part(ckpt, "32-true", "cpu", first_block=0, last_block=1)  # stage 1 of 2
    assert n_params > 0 and model.transformer.h[0].attn.proj.weight.device.type == "cpu"


@pytest.mark.unit
@pytest.mark.parametrize("raw", [{}, {"mlp_class_name": "LLaMAMLP", "norm_class_name": "RMSNorm"},
                                 {"mlp_class_name": "GptNeoxMLP", "norm_class_name": "RMSNorm", "bias": False}])
def test_hugging_face_weights_are_read_directly_only_for_llama_shapes(tmp_path, raw):
    """A field model_config.yaml lacks takes LitGPT's default (GptNeoxMLP, LayerNorm, bias), never Llama's."""
    from llmhpc.eval.loading import _hf_reader

    with pytest.raises(NotImplementedError, match="Llama shapes"):
        _hf_reader(tmp_path, {"n_layer": 2, **raw})
