"""The fsdp2 engine's LoRA family end to end on a tiny LitGPT model (CPU, fp32, one process), against stock
`litgpt finetune_lora` on the same model, data, sample order and initial adapters: same per-step losses, the
same files in final/, a merged lit_model.pth that LitGPT's own GPT loads."""

from __future__ import annotations

import sys

import fsdp2_tiny
import pytest
import torch
import yaml
from test_fsdp2_litgpt import run_fsdp2, step_losses

pytestmark = pytest.mark.litgpt

LORA = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_query": True, "lora_key": False,
        "lora_value": True, "lora_projection": True, "lora_mlp": True, "lora_head": False}


def lora_config(root, name, method=None, **engine):
    path = fsdp2_tiny.config(root, name, gbs=4, mbs=2, max_seq_length=128, final_validation=True,
                            engine=None if method is None else {"compile": False, "method": method, **engine})
    cfg = yaml.safe_load(path.read_text())
    cfg.update(LORA)
    if method is None:
        cfg.pop("resume")  # finetune_lora has no resume
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_stock_lora(config_path, monkeypatch) -> dict:
    """litgpt finetune_lora as its CLI would call it; returns its initial adapters (drawn when it builds the model)."""
    import litgpt.finetune.lora as stock
    from litgpt.args import EvalArgs, TrainArgs
    from litgpt.data import JSON

    initial = {}

    def capture(model, *args, **kwargs):
        initial.update({k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k})
        return mark(model, *args, **kwargs)

    mark = stock.mark_only_lora_as_trainable
    monkeypatch.setattr(stock, "mark_only_lora_as_trainable", capture)
    cfg = yaml.safe_load(config_path.read_text())
    monkeypatch.setattr(sys, "argv", ["litgpt", "finetune_lora", "--config", str(config_path)])
    data = JSON(**{**cfg["data"]["init_args"], "json_path": fsdp2_tiny.Path(cfg["data"]["init_args"]["json_path"])})
    stock.setup(checkpoint_dir=fsdp2_tiny.Path(cfg["checkpoint_dir"]), out_dir=fsdp2_tiny.Path(cfg["out_dir"]),
                precision=cfg["precision"], devices=1, data=data, train=TrainArgs(**cfg["train"]),
                eval=EvalArgs(**cfg["eval"]), optimizer=cfg["optimizer"], logger_name="csv", seed=cfg["seed"],
                **LORA)
    return initial


def run_fsdp2_from(config_path, monkeypatch, initial: dict) -> None:
    """The engine with stock's initial adapters in place of its own draw (the draws of two RNG orders differ)."""
    from llmhpc.train.fsdp2 import adapters

    own = adapters.initial_state

    def stock_s(gpt, state, seed, device):
        out = own(gpt, state, seed, device)
        assert {k for k in out if "lora_" in k} == set(initial)  # the same adapters, by litgpt's names
        return {**out, **initial}

    monkeypatch.setattr(adapters, "initial_state", stock_s)
    run_fsdp2(config_path, monkeypatch)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = fsdp2_tiny.make(tmp_path_factory.mktemp("lora"), n=32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
        initial = run_stock_lora(lora_config(root, "stock"), mp)
        run_fsdp2_from(lora_config(root, "lora", "lora", packing=False), mp, initial)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
        run_fsdp2(lora_config(root, "dora", "dora"), mp)  # packed, its own initial adapters
    return root


def load(path):
    state = torch.load(path, weights_only=True)
    return state.get("model", state)


def test_lora_steps_match_stock_finetune_lora(kit):
    stock, fsdp2 = step_losses(kit / "stock", 2), step_losses(kit / "lora", 2)
    assert len(stock) == len(fsdp2) == 8
    assert fsdp2 == pytest.approx(stock, rel=1e-4)


def test_final_files_are_stock_s_and_adapters_carry_stock_s_names(kit):
    names = lambda d: sorted(p.name for p in (d / "final").iterdir())  # noqa: E731
    assert names(kit / "lora") == names(kit / "stock") == names(kit / "dora")
    ours, stock = load(kit / "lora/final/lit_model.pth.lora"), load(kit / "stock/final/lit_model.pth.lora")
    assert ours.keys() == stock.keys()
    for name in stock:
        torch.testing.assert_close(ours[name], stock[name], rtol=1e-3, atol=1e-5)
    hparams = yaml.safe_load((kit / "lora/final/hyperparameters.yaml").read_text())
    assert {k: hparams[k] for k in LORA} == LORA  # what `litgpt merge_lora` reads


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_merged_checkpoint_loads_in_litgpt_s_gpt(kit, method):
    from litgpt import GPT, Config

    merged = load(kit / method / "final/lit_model.pth")
    model = GPT(Config.from_file(kit / method / "final/model_config.yaml"))
    model.load_state_dict(merged, strict=True)
    base = load(kit / "ckpt/lit_model.pth")
    assert not torch.equal(merged["transformer.h.0.attn.qkv.weight"], base["transformer.h.0.attn.qkv.weight"])
    assert torch.equal(merged["transformer.wte.weight"], base["transformer.wte.weight"])  # frozen, not adapted


def test_merged_lora_equals_stock_s_merge(kit):
    ours, stock = load(kit / "lora/final/lit_model.pth"), load(kit / "stock/final/lit_model.pth")
    assert ours.keys() == stock.keys()
    for name in stock:
        torch.testing.assert_close(ours[name], stock[name], rtol=1e-3, atol=1e-5)


def test_dora_loss_goes_down(kit):
    losses = step_losses(kit / "dora", 2)
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < losses[0] - 0.1
