"""The fsdp2 engine's pieces, in this process: the step plan and its loss weights, the packed attention mask,
the optimizer warm-up, the switches."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from llmhpc.train.fsdp2 import attention, data, loop
from llmhpc.train.fsdp2.args import EngineArgs
from llmhpc.train.fsdp2.distributed import World
from llmhpc.train.fsdp2.state import RunState


class Train:  # the fields of litgpt's TrainArgs that the plan reads
    global_batch_size, micro_batch_size, epochs, max_steps = 8, 2, 1, None


def samples(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, 40, (1,), generator=g))
        ids = torch.randint(3, 100, (length,), generator=g)
        targets = torch.cat([ids[1:], torch.tensor([-100])])
        targets[: length // 3] = -100  # a masked prompt
        out.append(data.Sample(ids, targets, length))
    return out


@pytest.mark.unit
@pytest.mark.parametrize("world", [1, 2, 4])
def test_packed_plan_uses_each_sample_of_the_step_once_in_rows_that_fit(world):
    s = samples()
    steps = data.plan(s, Train, world, True, row_len=64, micro_rows=2, data_seed=42, ignore=-100,
                      mode="micro_batch")
    batches = data.stock_micro_batches(len(s), 2, 42, 1)
    assert len(steps) == 2  # 10 micro batches of 2, 4 per step: the partial third step is dropped, as stock does
    for k, step in enumerate(steps):
        expected = sorted(i for b in batches[4 * k:4 * k + 4] for i in b)
        packed = sorted(i for rank in step.micros for m in rank for row in m for i in row)
        assert packed == expected
        assert len({len(rank) for rank in step.micros}) == 1  # every process runs as many micro batches
        for rank in step.micros:
            for m in rank:
                assert len(m) <= 2
                assert all(sum(len(s[i].input_ids) for i in row) <= 64 for row in m)


@pytest.mark.unit
def test_weights_make_the_step_loss_stock_s_mean_of_micro_batch_means():
    s = samples()
    batches = data.stock_micro_batches(len(s), 2, 42, 1)[:4]
    w = data.weights(batches, s, -100, "micro_batch")
    ce = {i: torch.rand(len(s[i].targets), generator=torch.Generator().manual_seed(i)) for b in batches for i in b}
    ours = sum(float((ce[i] * (s[i].targets != -100)).sum()) * w[i] for b in batches for i in b)
    stock = sum(float(torch.cat([ce[i][s[i].targets != -100] for i in b]).mean()) for b in batches) / len(batches)
    assert ours == pytest.approx(stock, rel=1e-6)
    tw = data.weights(batches, s, -100, "token")
    tokens = sum(int((s[i].targets != -100).sum()) for b in batches for i in b)
    assert all(v == pytest.approx(1 / tokens) for v in tw.values())


@pytest.mark.unit
def test_collate_restarts_positions_and_marks_documents():
    s = samples(3)
    micro = data.collate([[0, 1], [2]], s, {0: 1.0, 1: 1.0, 2: 1.0}, True, 80, -100)
    n0, n1 = len(s[0].input_ids), len(s[1].input_ids)
    assert micro.positions[0, :n0].tolist() == list(range(n0))
    assert micro.positions[0, n0:n0 + n1].tolist() == list(range(n1))
    assert set(micro.documents[0, :n0].tolist()) == {0} and set(micro.documents[0, n0:n0 + n1].tolist()) == {1}
    assert (micro.documents[0, n0 + n1:] == data.PAD_DOC).all() and (micro.weights[0, n0 + n1:] == 0).all()


def tiny_gpt():
    from litgpt import GPT, Config

    config = Config(name="t", block_size=128, vocab_size=64, padded_vocab_size=64, n_layer=2, n_head=4,
                    n_query_groups=2, n_embd=32, intermediate_size=64, parallel_residual=False, bias=False,
                    norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP")
    torch.manual_seed(0)
    return GPT(config).eval()


def block_outputs(gpt, ids, positions, mask):
    x = gpt.transformer.wte(ids)
    cos, sin = gpt.cos[positions], gpt.sin[positions]
    for block in gpt.transformer.h:
        x = block(x, cos, sin, mask)
    return gpt.lm_head(gpt.transformer.ln_f(x))


@torch.no_grad()
@pytest.mark.litgpt
def test_no_token_attends_across_a_document_boundary():
    """Document B packed after A gives the logits B gives alone, whatever A holds: a mask that let B's tokens
    see A's (or that restarted no positions) would fail both checks."""
    gpt = tiny_gpt()
    a, b = torch.randint(0, 64, (1, 11)), torch.randint(0, 64, (1, 9))
    alone = gpt(b)
    for first in (a, torch.randint(0, 64, (1, 11))):
        ids = torch.cat([first, b], dim=1)
        positions = torch.cat([torch.arange(11), torch.arange(9)]).unsqueeze(0)
        documents = torch.tensor([[0] * 11 + [1] * 9])
        packed = block_outputs(gpt, ids, positions, attention.make_mask(documents, "sdpa"))
        torch.testing.assert_close(packed[:, 11:], alone, rtol=1e-5, atol=1e-5)
    leaky = block_outputs(gpt, ids, positions, None)  # plain causal attention over the row
    assert not torch.allclose(leaky[:, 11:], alone, atol=1e-3)


@torch.no_grad()
@pytest.mark.litgpt
@pytest.mark.skipif(attention.flex_attention is None, reason="flex_attention needs torch >= 2.5")
def test_flex_document_mask_equals_the_dense_mask():
    """Forward only: flex_attention has no backward on CPU; on CUDA the engine uses it in training."""
    gpt = tiny_gpt()
    attention.install(gpt, "flex")
    documents = torch.tensor([[0] * 50 + [1] * 40 + [2] * 38, [0] * 128])
    ids = torch.randint(0, 64, (2, 128))
    positions = torch.cat([torch.arange(50), torch.arange(40), torch.arange(38)]).expand(2, -1).clone()
    positions[1] = torch.arange(128)
    dense = block_outputs(gpt, ids, positions, attention.make_mask(documents, "sdpa"))
    flex = block_outputs(gpt, ids, positions, attention.make_mask(documents, "flex"))
    torch.testing.assert_close(flex, dense, rtol=1e-4, atol=1e-4)


@torch.no_grad()
@pytest.mark.litgpt
@pytest.mark.skipif(attention.flex_attention is None, reason="flex_attention needs torch >= 2.5")
def test_a_compiled_flex_block_is_not_recompiled_on_its_second_pass():
    """The engine's warm-up runs each block twice; a guard on the attention module's own state made the second
    pass recompile every block (seen on 4 x H200). Dynamo traces here without Inductor (backend eager)."""
    gpt = tiny_gpt()
    attention.install(gpt, "flex")
    documents = torch.tensor([[0] * 70 + [1] * 58])
    ids = torch.randint(0, 64, (1, 128))
    positions = torch.cat([torch.arange(70), torch.arange(58)]).unsqueeze(0)
    mask = attention.make_mask(documents, "flex")
    block = gpt.transformer.h[0]
    cos, sin = gpt.cos[positions], gpt.sin[positions]
    x = gpt.transformer.wte(ids)
    torch._dynamo.reset()
    compiled = torch.compile(block, backend="eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        first = compiled(x, cos, sin, mask)
        second = compiled(x, cos, sin, mask)
    torch.testing.assert_close(second, first)
    torch.testing.assert_close(first, block(x, cos, sin, mask), rtol=1e-5, atol=1e-5)


@pytest.mark.unit
def test_optimizer_warm_up_changes_nothing():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(2)]
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    warmed = torch.optim.AdamW(params, lr=0.1, weight_decay=0.1)
    fresh = torch.optim.AdamW(twin, lr=0.1, weight_decay=0.1)
    for p in params:
        p.grad = torch.randn_like(p)  # what a warm-up pass leaves behind
    loop.warm_optimizer(warmed)
    for p, q in zip(params, twin):
        assert torch.equal(p, q) and p.grad is None
    for _ in range(3):
        g = [torch.randn_like(p) for p in params]
        for p, q, gi in zip(params, twin, g):
            p.grad, q.grad = gi.clone(), gi.clone()
        warmed.step()
        fresh.step()
    for p, q in zip(params, twin):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.unit
def test_switches_are_checked():
    assert EngineArgs(activation_checkpointing=False).activation_checkpointing == "off"  # YAML's off
    with pytest.raises(ValueError, match="engine.sharding"):
        EngineArgs(sharding="zero3")
    with pytest.raises(ValueError, match="engine.micro_rows"):
        EngineArgs(micro_rows=0)


@pytest.mark.unit
def test_warm_up_passes_every_packed_shape_once(monkeypatch):
    """A packed run warms every micro batch shape of its plan, so no training step waits for a recompile."""
    items = samples(60)
    steps = data.plan(items, Train, 1, True, 48, 5, 42, -100, "micro_batch")  # 4 shapes
    shape = lambda rows: data.shape(rows, items, True, 48)  # noqa: E731
    wanted = {shape(rows) for s in steps for rows in s.micros[0]}
    seen = []
    monkeypatch.setattr(loop, "forward_backward", lambda state, micro, last: seen.append(micro))
    monkeypatch.setattr(loop, "warm_optimizer", lambda optimizer: None)
    state = RunState(world=World(), precision="32-true", samples=items, ignore=-100)
    loop.warm_up(state, steps, lambda step, rows: shape(rows), shape, passes=None)
    assert len(wanted) > 1 and sorted(seen) == sorted(wanted)
    seen.clear()
    loop.warm_up(state, steps, lambda step, rows: shape(rows), shape, passes=3)
    assert len(seen) == 3 and len(set(seen)) == min(3, len(wanted))


def test_a_failing_prefetch_thread_fails_the_loop_instead_of_hanging(monkeypatch):
    """An error while the background thread builds micro batches (on the GPU: CUDA out of memory) reaches the
    training loop as an exception; the loop used to wait for the next batch forever."""
    items = samples(40)
    steps = data.plan(items, Train, 1, True, 48, 5, 42, -100, "micro_batch")
    real = data.collate
    calls = []

    def collate(*args, **kwargs):
        calls.append(1)
        if len(calls) > len(steps[0].micros[0]):  # the second step's first micro batch
            raise MemoryError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(data, "collate", collate)
    got = data.batches(steps, 0, items, True, 48, -100, torch.device("cpu"), prefetch=True)
    assert len(next(got)) == len(steps[0].micros[0])
    outcome = []

    def consume():  # in a thread, so that a hang fails the test instead of stopping the run
        try:
            next(got)
        except RuntimeError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=consume, daemon=True)
    waiter.start()
    waiter.join(60)
    assert not waiter.is_alive(), "the loop still waits for a batch the failed thread will never make"
    assert "prefetch" in str(outcome[0]) and isinstance(outcome[0].__cause__, MemoryError)


@pytest.mark.unit
def test_fast_write_loads_back_and_puts_torch_s_save_settings_back(tmp_path):
    from torch.utils.serialization import config

    from llmhpc.train.fsdp2 import checkpoint

    state = {"a.weight": torch.randn(64, 32, dtype=torch.bfloat16), "b.bias": torch.arange(5.0)}
    before = (config.save.compute_crc32, config.save.use_pinned_memory_for_d2h)
    seen = {}
    real_save = torch.save

    def spy(obj, f):
        seen["crc32"] = config.save.compute_crc32
        real_save(obj, f)

    for fast in (True, False):
        torch.save = spy
        try:
            checkpoint.write(state, tmp_path / "lit_model.pth", fast=fast)
        finally:
            torch.save = real_save
        assert seen["crc32"] is (not fast)  # the fast save skips the zip CRC32, the stock-like one keeps it
        assert (config.save.compute_crc32, config.save.use_pinned_memory_for_d2h) == before
        back = torch.load(tmp_path / "lit_model.pth", mmap=True, weights_only=True)["model"]
        assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
        assert not (tmp_path / "lit_model.tmp").exists()


@pytest.mark.unit
def test_packed_float8_runs_compile_a_graph_per_shape_and_others_go_shape_generic():
    from llmhpc.train.fsdp2.engine import static_shapes

    assert static_shapes(EngineArgs(float8=True))
    assert static_shapes(EngineArgs(packing=False, compile_shapes="static"))
    assert not static_shapes(EngineArgs()) and not static_shapes(EngineArgs(packing=False, float8=True))
    assert not static_shapes(EngineArgs(float8=True, compile_shapes="dynamic"))
    with pytest.raises(ValueError, match="engine.compile_shapes: 'fixed' is not one of auto, static, dynamic"):
        EngineArgs(compile_shapes="fixed")


@pytest.mark.unit
def test_a_background_write_lands_where_it_was_asked_when_the_main_thread_changes_directory(tmp_path,
                                                                                             monkeypatch):
    """jsonargparse (litgpt's save_hyperparameters, run beside the write) changes the working directory while it
    parses: a relative path given to the writer must still name the folder it named when the write began."""
    from llmhpc.train.fsdp2 import checkpoint

    (tmp_path / "job").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "job")
    real_save = torch.save

    def save_after_a_chdir(obj, f):
        os.chdir(tmp_path / "elsewhere")  # what the main thread does halfway through the write
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_after_a_chdir)
    writer = checkpoint.write_in_background({"w": torch.ones(3)}, Path("out/final/lit_model.pth"), fast=True)
    assert checkpoint.joined(writer) >= 0
    back = torch.load(tmp_path / "job/out/final/lit_model.pth", weights_only=True)["model"]
    assert torch.equal(back["w"], torch.ones(3))
    assert not (tmp_path / "elsewhere/out").exists()


@pytest.mark.unit
def test_a_failed_background_write_fails_the_run_naming_the_file(tmp_path):
    from llmhpc.train.fsdp2 import checkpoint

    (tmp_path / "final").write_text("a file where the folder should be")
    writer = checkpoint.write_in_background({"w": torch.ones(3)}, tmp_path / "final/lit_model.pth", fast=True)
    with pytest.raises(RuntimeError, match=r"writing .*final/lit_model\.pth failed"):
        checkpoint.joined(writer)


@pytest.mark.unit
def test_gather_keeps_cpu_tensors_where_no_gpu_has_room():
    from llmhpc.train.fsdp2 import checkpoint

    gpt = torch.nn.Linear(4, 3)
    assert not checkpoint.room_on_device(gpt.state_dict())
    full = checkpoint.gather(gpt, main=True)
    assert set(full) == {"weight", "bias"} and all(t.device.type == "cpu" for t in full.values())
    assert checkpoint.gather(gpt, main=False) == {}


@pytest.mark.unit
def test_the_scheduler_s_warning_becomes_a_flag_on_the_device():
    import signal

    from llmhpc.train.fsdp2 import distributed, step_checkpoint

    warned = step_checkpoint.Warned()
    try:
        world = distributed.World()
        assert warned.flag(world).item() == 0.0
        warned._note(signal.SIGUSR1, None)
        flag = warned.flag(world)
        assert flag.item() == 1.0 and flag.device == world.device and flag.dtype == torch.float32
    finally:
        warned.release()


def test_a_profiled_step_prints_its_top_operators_on_the_main_process_only(capsys):
    from types import SimpleNamespace

    a = torch.randn(64, 64)
    for main in (True, False):
        with loop.profiled(True, SimpleNamespace(device=torch.device("cpu"), main=main)):
            torch.mm(a, a)
        out = capsys.readouterr().out
        assert ("aten::mm" in out) is main  # without a GPU: by CPU time, and no device timeline to print
        assert "device span" not in out
    with loop.profiled(False, SimpleNamespace(device=torch.device("cpu"), main=True)):
        torch.mm(a, a)
    assert capsys.readouterr().out == ""


@pytest.mark.unit
def test_compile_auto_compiles_a_large_planned_job_and_not_a_small_one(monkeypatch):
    """The ISC25 example's LoRA job on one GPU (232 records of at most 512 tokens, SmolLM2-135M's shape) runs
    eager; a 7B full fine-tune of 1024 Alpaca records (~225 tokens each, packed) compiles; true and false are
    obeyed; a warm compile cache lowers the bar; nothing compiles on a CPU."""
    from llmhpc.train.fsdp2 import compile_choice
    from llmhpc.train.metrics import flops_per_token

    monkeypatch.delenv("LLMHPC_FSDP2_COMPILE_CPU", raising=False)
    small = compile_choice.planned_seconds(232 * 512, flops_per_token(135e6, 30, 576, 512, frozen_base=True), 1)
    large = compile_choice.planned_seconds(1024 * 225, flops_per_token(6.7e9, 32, 4096, 512), 1)
    assert small < 1 and large > 20
    assert compile_choice.decide("auto", "cuda", small, warm_cache=False)[0] is False
    chosen, why = compile_choice.decide("auto", "cuda", large, warm_cache=False)
    assert chosen is True and why.startswith("compile: ") and f"{large:.1f} s" in why
    middle = (compile_choice.COMPILE_PAYS_WARM_S + compile_choice.COMPILE_PAYS_S) / 2
    assert compile_choice.decide("auto", "cuda", middle, warm_cache=False)[0] is False
    assert compile_choice.decide("auto", "cuda", middle, warm_cache=True)[0] is True
    assert compile_choice.decide(True, "cuda", small, warm_cache=False)[0] is True
    assert compile_choice.decide(False, "cuda", large, warm_cache=True)[0] is False
    assert compile_choice.decide(True, "cpu", large, warm_cache=True)[0] is False


@pytest.mark.unit
def test_a_compile_cache_with_graphs_counts_as_warm(tmp_path, monkeypatch):
    from llmhpc.train.fsdp2 import compile_choice

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    assert not compile_choice.warm_cache()
    (tmp_path / "fxgraph").mkdir()
    assert not compile_choice.warm_cache()
    (tmp_path / "fxgraph" / "ab").mkdir()
    assert compile_choice.warm_cache()


@pytest.mark.unit
def test_engine_compile_takes_true_false_and_auto_only():
    assert EngineArgs().compile == "auto"
    assert EngineArgs(compile=False).compile is False
    with pytest.raises(ValueError, match="engine.compile"):
        EngineArgs(compile="sometimes")


@pytest.mark.unit
def test_attention_auto_compiles_no_flex_kernels_for_a_job_that_runs_eager(monkeypatch):
    """flex_attention compiles its kernels: where compile auto chose eager, attention auto takes SDPA; a flex the
    user asked for, or compile false as given, keeps flex."""
    from types import SimpleNamespace

    from llmhpc.train.fsdp2 import engine
    from llmhpc.train.fsdp2.distributed import World

    monkeypatch.setattr(attention, "backend", lambda choice, device: "flex" if choice in ("auto", "flex") else choice)

    def backend(attention_choice, compile_setting, compiling):
        run = SimpleNamespace(engine=EngineArgs(attention=attention_choice, compile=compile_setting))
        return engine.attention_backend(run, World(), compiling)

    assert backend("auto", "auto", compiling=False) == "sdpa"
    assert backend("auto", "auto", compiling=True) == "flex"
    assert backend("flex", "auto", compiling=False) == "flex"
    assert backend("auto", False, compiling=False) == "flex"


@pytest.mark.unit
def test_the_planned_layout_leaves_its_later_choices_to_be_replaced():
    """plan_layout decides what the switches and the memory estimate give; compile, attention and float8's
    all-gather come later, each as a new Layout (it is frozen), and the readers see them as attributes."""
    import dataclasses
    from types import SimpleNamespace

    from litgpt import Config

    from llmhpc.train.fsdp2 import engine
    from llmhpc.train.fsdp2.layout import Layout

    config = Config(name="fsdp2-test-llama", block_size=256, vocab_size=512, padded_vocab_size=512, n_layer=2,
                    n_head=4, n_embd=64)
    run = SimpleNamespace(engine=EngineArgs(), precision="32-true", train=SimpleNamespace(micro_batch_size=2),
                          lora=SimpleNamespace(head=False))
    planned = engine.plan_layout(run, World(), config, 128)
    assert isinstance(planned, Layout)
    assert (planned.sharding, planned.shards, planned.row_len, planned.cross_entropy) == ("none", 1, 128, "chunked")
    assert (planned.compile, planned.attention, planned.float8_all_gather, planned.converted) == \
        (False, "sdpa", False, ())
    with pytest.raises(dataclasses.FrozenInstanceError):
        planned.compile = True
    assert engine.warm_passes(run, planned, "sdpa") == 1  # eager blocks: one pass on a GPU
    assert engine.warm_passes(run, planned, "sdpa", "cpu") == 0  # and none on a CPU: nothing to compile or cache
    assert engine.warm_passes(run, dataclasses.replace(planned, compile=True), "sdpa") is None  # packed: every shape
