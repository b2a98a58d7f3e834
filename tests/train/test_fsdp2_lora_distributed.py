"""Two processes (torchrun, gloo on CPU) train the adapters as one: DoRA with its frozen base sharded by FSDP2
(trainable and frozen parameters in one block), QLoRA with its NF4 base replicated (DDP over the adapters)."""

from __future__ import annotations

import os
import subprocess
import sys

import fsdp2_tiny
import pytest
import yaml
from test_fsdp2_distributed import REPO_SRC, losses

pytestmark = pytest.mark.distributed

LORA = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_query": True, "lora_value": True, "lora_mlp": True}


def config(root, name, devices, engine):
    path = fsdp2_tiny.config(root, name, gbs=4, mbs=2, max_seq_length=128, devices=devices, engine=engine)
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **LORA}, sort_keys=False))
    return path


@pytest.mark.parametrize("method,sharding,layout", [("dora", "full", "sharding=full"), ("qlora", "auto", "sharding=none")])
def test_two_ranks_give_one_rank_s_losses(tmp_path, method, sharding, layout):
    root = fsdp2_tiny.make(tmp_path, n=32)
    env = dict(os.environ, PYTHONPATH=f"{REPO_SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1", JSONARGPARSE_DEPRECATION_WARNINGS="off")
    engine = {"compile": False, "sharding": sharding, "method": method}
    proc = subprocess.Popen([sys.executable, "-m", "llmhpc.train.fsdp2", "--config",
                             str(config(root, "ranks2", 2, engine))], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    from llmhpc.train.fsdp2.engine import setup  # the one-process reference, here meanwhile

    setup(["--config", str(config(root, "ranks1", 1, engine))])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-5000:]
    assert "2 process(es) via torchrun" in out and layout in out and f"method={method}" in out
    runs = {n: losses(root / f"ranks{n}") for n in (1, 2)}
    assert len(runs[1]) == len(runs[2]) == 8
    assert runs[2] == pytest.approx(runs[1], rel=1e-5)
    assert (root / "ranks2/final/lit_model.pth").is_file() and (root / "ranks2/final/lit_model.pth.lora").is_file()
    if method == "qlora":  # merged as `litgpt merge_lora` does: the adapters added to the base's own weights
        import torch

        base = torch.load(root / "ckpt/lit_model.pth", weights_only=True)
        base = base.get("model", base)
        merged = torch.load(root / "ranks1/final/lit_model.pth", weights_only=True)["model"]
        assert torch.equal(merged["transformer.h.0.attn.proj.weight"], base["transformer.h.0.attn.proj.weight"])
        change = merged["transformer.h.0.attn.qkv.weight"].float() - base["transformer.h.0.attn.qkv.weight"].float()
        assert 0 < torch.linalg.matrix_rank(change) <= 2 * LORA["lora_r"]  # B A on query and value, no NF4 rounding
