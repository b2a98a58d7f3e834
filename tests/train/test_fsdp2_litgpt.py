"""The fsdp2 engine against stock `litgpt finetune_full`, both in this process on a tiny LitGPT model (CPU, fp32):
same per-step losses (packing off and on), same output files, a checkpoint LitGPT loads and generates from."""

from __future__ import annotations

import contextlib
import csv
import io
import sys

import fsdp2_tiny
import pytest
import torch
import yaml

pytestmark = pytest.mark.litgpt

STEPS = 8  # 32 samples, global batch 4, micro batch 2: 8 optimizer steps of 2 micro batches


def run_stock(config_path, monkeypatch):
    """litgpt finetune_full as its CLI would call it (its hyperparameter capture reads sys.argv)."""
    from litgpt.args import EvalArgs, TrainArgs
    from litgpt.data import JSON
    from litgpt.finetune.full import setup

    cfg = yaml.safe_load(config_path.read_text())
    monkeypatch.setattr(sys, "argv", ["litgpt", "finetune_full", "--config", str(config_path)])
    data = JSON(**{**cfg["data"]["init_args"], "json_path": fsdp2_tiny.Path(cfg["data"]["init_args"]["json_path"])})
    setup(checkpoint_dir=fsdp2_tiny.Path(cfg["checkpoint_dir"]), out_dir=fsdp2_tiny.Path(cfg["out_dir"]),
          precision=cfg["precision"], devices=1, data=data, train=TrainArgs(**cfg["train"]),
          eval=EvalArgs(**cfg["eval"]), optimizer=cfg["optimizer"], logger_name="csv", seed=cfg["seed"])


def run_fsdp2(config_path, monkeypatch):
    from llmhpc.train.fsdp2.engine import setup

    monkeypatch.setattr(sys, "argv", ["python", "--config", str(config_path)])
    setup(["--config", str(config_path)])


def step_losses(out_dir, accumulation: int) -> list[float]:
    """The loss logged at each optimizer step (stock logs every micro batch; the step's is the last one)."""
    with open(out_dir / "logs/csv/version_0/metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("loss")]
    return [float(r["loss"]) for r in rows if int(float(r["iter"])) % accumulation == 0]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = fsdp2_tiny.make(tmp_path_factory.mktemp("fsdp2"), n=32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
        run_stock(fsdp2_tiny.config(root, "stock", gbs=4, mbs=2, max_seq_length=128), mp)
        for name, engine in (("unpacked", {"packing": False}), ("packed", {})):
            run_fsdp2(fsdp2_tiny.config(root, name, gbs=4, mbs=2, max_seq_length=128,
                                      engine={"compile": False, **engine}), mp)
        # the compiled blocks (inductor on this CPU), to compare with the eager packed run
        mp.setenv("LLMHPC_FSDP2_COMPILE_CPU", "1")
        torch._dynamo.reset()
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            run_fsdp2(fsdp2_tiny.config(root, "compiled", gbs=4, mbs=2, max_seq_length=128,
                                      engine={"compile": True, "compile_shapes": "static"}), mp)
        (root / "compiled.stdout").write_text(log.getvalue())
    return root


def test_unpacked_steps_match_stock(kit):
    stock, fsdp2 = step_losses(kit / "stock", 2), step_losses(kit / "unpacked", 2)
    assert len(stock) == len(fsdp2) == STEPS
    assert fsdp2 == pytest.approx(stock, rel=1e-4)


def test_packed_steps_match_stock(kit):
    """Packing keeps stock's objective (each stock micro batch's token mean, averaged over the step)."""
    stock, fsdp2 = step_losses(kit / "stock", 2), step_losses(kit / "packed", 2)
    assert len(fsdp2) == STEPS
    assert fsdp2[0] == pytest.approx(stock[0], rel=1e-4)
    assert fsdp2 == pytest.approx(stock, rel=2e-2)


def test_outputs_are_stock_s(kit):
    names = lambda d: sorted(p.name for p in (d / "final").iterdir())  # noqa: E731
    assert names(kit / "packed") == names(kit / "stock")
    header = lambda d: (d / "logs/csv/version_0/metrics.csv").read_text().splitlines()[0]  # noqa: E731
    assert header(kit / "packed") == header(kit / "stock")
    stock_h = yaml.safe_load((kit / "stock/final/hyperparameters.yaml").read_text())
    fsdp2_h = yaml.safe_load((kit / "packed/final/hyperparameters.yaml").read_text())
    assert {k: v for k, v in fsdp2_h.items() if k != "out_dir"} == {k: v for k, v in stock_h.items() if k != "out_dir"}


def test_checkpoint_loads_in_litgpt_and_matches_stock_s_weights(kit):
    from litgpt import GPT, Config

    def load(d):
        state = torch.load(d / "final/lit_model.pth", weights_only=True)
        return state.get("model", state)

    fsdp2, stock = load(kit / "unpacked"), load(kit / "stock")
    model = GPT(Config.from_file(kit / "unpacked/final/model_config.yaml"))
    model.load_state_dict(fsdp2, strict=True)
    assert fsdp2.keys() == stock.keys()
    for name in stock:
        torch.testing.assert_close(fsdp2[name], stock[name], rtol=1e-3, atol=1e-5)


def test_litgpt_generate_runs_on_the_checkpoint(kit, capsys):
    from litgpt.generate.base import main

    main(kit / "packed/final", prompt="alpha beta", max_new_tokens=3, top_k=1, precision="32-true")
    assert "alpha beta" in capsys.readouterr().out


def test_compiled_blocks_train_as_eager_and_compile_nothing_after_the_warm_up(kit):
    """The compile switch: the same per-step losses as the eager packed run, and every packed shape compiled
    before the clock starts (a step that recompiles took 7 s instead of 1 on an H200)."""
    log = (kit / "compiled.stdout").read_text()
    assert "compile=on (static shapes)" in log  # the kit's compiled run asks for a graph per shape
    assert "0 graphs compiled during training" in log, log[-2000:]
    assert step_losses(kit / "compiled", 2) == pytest.approx(step_losses(kit / "packed", 2), rel=1e-4)
