"""Loading a LitGPT checkpoint for scoring or generation."""

from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"32-true": torch.float32, "16-true": torch.float16, "bf16-true": torch.bfloat16}


def load_litgpt(checkpoint_dir: Path, precision: str | None, device: str):
    """A LitGPT model and tokenizer from a checkpoint directory (lit_model.pth + model_config.yaml);
    precision None keeps the stored dtype. The weights are memory-mapped, not copied, until moved."""
    from litgpt import GPT, Config, Tokenizer

    checkpoint_dir = Path(checkpoint_dir)
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    with torch.device("meta"):
        model = GPT(config)
    state = torch.load(checkpoint_dir / "lit_model.pth", mmap=True, weights_only=True, map_location="cpu")
    state = state.get("model", state)
    model.load_state_dict(state, strict=True, assign=True)
    model.cos, model.sin = model.rope_cache(device=torch.device("cpu"))  # non-persistent buffers, still on meta
    model = model.to(device=device, dtype=DTYPES[precision] if precision else None).eval()
    model.max_seq_length = config.block_size
    return model, Tokenizer(checkpoint_dir)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
