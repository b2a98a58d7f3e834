"""Float8 scoring (evaluate.float8): the fast scorer with its blocks' linear layers in torchao's float8 gives the
bf16 scorer's answers, eager and compiled (one graph for every block), and is refused, naming the key, where it
cannot run. torchao's float8 matrix product runs on a CPU too (torch's own _scaled_mm); only its FP8-tensor-core
check is lifted here, as the device runs it on an H100 (docs/bench-hellaswag.md)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchao")

from test_fast_scorer import tiny_gpt  # noqa: E402

from llmhpc.eval import float8  # noqa: E402


@pytest.fixture()
def cpu_float8(monkeypatch):
    """torchao's float8 on this CPU: its hardware check asks for compute capability 8.9."""
    import torchao.quantization.quant_api as quant_api

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)


def test_only_linear_layers_float8_can_multiply_are_swapped(cpu_float8):
    from torchao.quantization import Float8Tensor

    model = tiny_gpt("llama").to(torch.bfloat16)
    odd = torch.nn.Sequential(torch.nn.Linear(64, 40, bias=False)).to(torch.bfloat16)  # 40 rows: not a multiple of 16
    assert float8.quantize_blocks([*model.transformer.h, odd]) == 2 * 5
    block = model.transformer.h[0]
    for linear in (block.attn.qkv, block.attn.proj, block.mlp.fc_1, block.mlp.fc_2, block.mlp.proj):
        assert isinstance(linear.weight, Float8Tensor)
    assert type(model.lm_head.weight) is torch.nn.Parameter and type(block.norm_1.weight) is torch.nn.Parameter
    assert type(odd[0].weight) is torch.nn.Parameter


@pytest.mark.litgpt
def test_float8_scoring_gives_the_bf16_answers_eager_and_compiled(cpu_float8):
    """Per item, float8's four log-likelihoods stay within a few hundredths of a nat of bf16's (rowwise scales
    keep each row's own range) and pick the same endings; compiled (aot_eager, as the GPU's graph capture) the
    float8 blocks give eager float8's numbers, the warm-up's stand-in float8 block compiling the one graph."""
    from torch._dynamo.utils import counters

    from llmhpc.eval.fast import score_items_fast
    from llmhpc.eval.warm import warm_up
    from llmhpc.sources import embedded
    from llmhpc.sources.tiny import train_tokenizer

    tokenizer = train_tokenizer(512)
    encode = lambda s: tokenizer.encode(s).ids  # noqa: E731
    docs = embedded.eval_records()[:40]
    model = tiny_gpt("llama").to(torch.bfloat16)
    bf16 = score_items_fast(model, encode, docs, 0, "cpu", token_budget=400)
    float8.quantize_blocks(model.transformer.h)
    eager = score_items_fast(model, encode, docs, 0, "cpu", token_budget=400)
    worst = max(abs(a - b) for r, f in zip(bf16, eager) for a, b in zip(r["loglikelihoods"], f["loglikelihoods"]))
    assert 0 < worst < 0.25, worst  # float8 did change the numbers, by little
    same = sum(r["pred"] == f["pred"] and r["pred_norm"] == f["pred_norm"] for r, f in zip(bf16, eager))
    assert same >= 38, same

    torch._dynamo.reset()
    counters.clear()
    warm_up(model.config, "cpu", torch.bfloat16, "aot_eager", ((3, 37), (2, 32)), float8=True)
    compiled = score_items_fast(model, encode, docs, 0, "cpu", token_budget=400, compile="aot_eager")
    assert counters["stats"]["unique_graphs"] == 1, "a float8 block or batch shape recompiled"
    flat = lambda rows: [ll for r in rows for ll in r["loglikelihoods"]]  # noqa: E731
    assert flat(compiled) == pytest.approx(flat(eager), abs=1e-3)


def test_refused_where_it_cannot_run_naming_the_key():
    assert float8.problem("cpu", "bf16-true").startswith("evaluate.float8: float8 scoring needs an NVIDIA GPU")
    assert "runs on cpu. Set evaluate.float8: false." in float8.problem("cpu", "32-true")


def test_the_scorer_refuses_float8_before_loading_anything(tmp_path):
    from llmhpc.eval import run

    argv = ["--checkpoint", str(tmp_path / "none"), "--eval-file", str(tmp_path / "none.jsonl"), "--predictions",
            str(tmp_path / "p.jsonl"), "--metrics", str(tmp_path / "m.json"), "--device", "cpu", "--float8"]
    assert run.parse_args(argv).float8 is True
    with pytest.raises(ValueError, match="evaluate.float8: float8 scoring needs an NVIDIA GPU"):
        run.main(argv)
    assert not (tmp_path / "m.json").exists()
