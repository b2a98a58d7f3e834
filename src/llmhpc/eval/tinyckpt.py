"""A tiny random LitGPT checkpoint written directly (no conversion), for the fast scorer's tests and smoke runs:
lit_model.pth, model_config.yaml and a byte-level BPE tokenizer trained on the embedded texts."""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPECIAL = "<|endoftext|>"


def write_tiny_litgpt(out_dir: Path, family: str = "llama", n_layer: int = 2, vocab_size: int = 512,
                      block_size: int = 256, n_embd: int = 64, seed: int = 0, add_bos: bool = False) -> Path:
    from litgpt import GPT, Config
    from litgpt.utils import save_config

    try:
        from llmhpc.sources.tiny import train_tokenizer
    except ImportError:  # older layout
        from llmhpc.tiny import train_tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = dict(block_size=block_size, vocab_size=vocab_size, padded_vocab_size=vocab_size, n_layer=n_layer,
                 n_head=4, n_embd=n_embd, intermediate_size=2 * n_embd)
    if family == "llama":
        shape.update(mlp_class_name="LLaMAMLP", norm_class_name="RMSNorm", bias=False, parallel_residual=False,
                     n_query_groups=2, rotary_percentage=1.0)
    else:  # GPT-NeoX (Pythia): partial rotary, parallel residual, LayerNorm, biases
        shape.update(rotary_percentage=0.25)
    config = Config(name=f"tiny-{family}", **shape)
    save_config(config, out_dir)
    torch.manual_seed(seed)
    torch.save(GPT(config).state_dict(), out_dir / "lit_model.pth")
    train_tokenizer(vocab_size).save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIAL, "eos_token": SPECIAL,
        "unk_token": SPECIAL, "add_bos_token": add_bos, "model_max_length": block_size}, indent=1) + "\n")
    return out_dir
