"""float8 weights all-gathered by FSDP2 in float8 (torchao's float8 all-gather), on CPU with float8 emulated: the
training step runs, the scales are precomputed after the optimizer step, and the gathered checkpoint holds plain
tensors under LitGPT's names (the float8 numerics themselves are checked on the device: docs/bench-lora.md)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchao")
pytestmark = pytest.mark.litgpt

from llmhpc.train.fsdp2 import checkpoint, converters  # noqa: E402


@pytest.fixture()
def one_rank_group(tmp_path):
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def tiny_gpt():
    from litgpt import GPT, Config

    torch.manual_seed(0)
    config = Config(n_layer=2, n_embd=64, n_head=4, n_query_groups=4, vocab_size=128, padded_vocab_size=128,
                    block_size=32, intermediate_size=128, mlp_class_name="LLaMAMLP", norm_class_name="RMSNorm",
                    bias=False, parallel_residual=False, rotary_percentage=1.0)
    return GPT(config)


def test_float8_all_gather_trains_and_saves_plain_weights(one_rank_group):
    from torch.distributed.fsdp import fully_shard

    gpt = tiny_gpt()
    before = {k: v.clone() for k, v in gpt.state_dict().items()}
    converted = converters.convert_float8(gpt, fsdp_all_gather=True, emulate=True)
    assert converted == 2 * 5  # qkv, proj, fc_1, fc_2 and the MLP's proj per block; lm_head stays bf16/fp32
    for block in gpt.transformer.h:
        fully_shard(block)
    fully_shard(gpt)
    weight = gpt.transformer.h[0].attn.qkv.weight
    assert type(weight.to_local()).__name__ == "WeightWithDynamicFloat8CastTensor"

    optimizer = torch.optim.AdamW(gpt.parameters(), lr=1e-2)
    idx = torch.randint(0, 128, (2, 32))
    losses = []
    for _ in range(3):
        logits = gpt(idx)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.roll(-1, 1).flatten())
        loss.backward()
        optimizer.step()
        converters.precompute_float8_scales(gpt)
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]

    state = checkpoint.gather(gpt, main=True)
    assert set(state) == set(before)
    assert all(type(t) is torch.Tensor for t in state.values())
    moved = state["transformer.h.0.attn.qkv.weight"]
    assert moved.shape == before["transformer.h.0.attn.qkv.weight"].shape
    assert not torch.equal(moved, before["transformer.h.0.attn.qkv.weight"])  # trained
    assert torch.equal(moved, converters.plain(weight.to_local()))

    checkpoint.load_into(gpt, before)  # the loader copies full tensors into the wrapped shards
    assert torch.equal(converters.plain(weight.to_local()), before["transformer.h.0.attn.qkv.weight"])


@pytest.mark.parametrize("choice, fsdp, nodes, gathers", [
    ("auto", True, 1, False), ("auto", True, 2, True), ("on", True, 1, True), ("off", True, 4, False),
    (True, True, 1, True), ("auto", False, 2, False)])
def test_float8_weights_are_gathered_in_float8_across_nodes_only_unless_told(choice, fsdp, nodes, gathers):
    from llmhpc.train.fsdp2.args import EngineArgs

    engine = EngineArgs(float8=True, float8_all_gather=choice)  # YAML's on reads as True
    assert converters.gathers_float8(engine, fsdp, nodes) is gathers
    assert not converters.gathers_float8(EngineArgs(float8_all_gather="on"), True, 2)  # no float8, no float8 gather
    with pytest.raises(ValueError, match="engine.float8_all_gather: 'always' is not one of auto, on, off"):
        EngineArgs(float8=True, float8_all_gather="always")
