"""Loading a LitGPT checkpoint (lit_model.pth + model_config.yaml + tokenizer) whole, for scoring, serving and the
conversion check, and the device and precision it is loaded in (float8 included). Below eval and serve, which both load one."""

from __future__ import annotations

from pathlib import Path

import torch

from llmhpc import bulk_copy
from llmhpc.settings import FLOAT8_CAPABILITY, FLOAT8_GPUS

DTYPES = {"32-true": torch.float32, "16-true": torch.float16, "bf16-true": torch.bfloat16}


def default_precision(device: str) -> str:
    if not device.startswith("cuda"):
        return "32-true"
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16-true" if major >= 8 else "16-true"  # V100 (7.0) has no bf16 tensor cores: fp16


def float8_problem(device, key: str, what: str) -> str | None:
    """Why `what` (training, scoring) in float8 cannot run on this process's `device`, naming the config `key`
    (engine.float8, evaluate.float8); None where it can."""
    device = torch.device(device)
    if device.type != "cuda":
        return (f"{key}: float8 {what} needs an NVIDIA GPU of compute capability >= 8.9 ({FLOAT8_GPUS}); this"
                f" process runs on {device.type}. Set {key}: false.")
    capability = torch.cuda.get_device_capability(device)
    if capability < FLOAT8_CAPABILITY:
        return (f"{key}: {torch.cuda.get_device_name(device)} has compute capability {capability[0]}.{capability[1]},"
                f" below 8.9: no FP8 tensor cores. Set {key}: false.")
    return None


def load_litgpt(checkpoint_dir: Path, precision: str | None, device: str):
    """A LitGPT model and tokenizer from a checkpoint directory (lit_model.pth + model_config.yaml);
    precision None keeps the stored dtype. The weights are memory-mapped, not copied, until moved."""
    from llmhpc import litgpt_core

    litgpt_core.load()  # without Lightning, where nothing imported LitGPT before
    from litgpt import Config, Tokenizer

    checkpoint_dir = Path(checkpoint_dir)
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    model = litgpt_core.meta_gpt(config)  # its RoPE cache is made below
    state = read_state(checkpoint_dir / "lit_model.pth")
    dtype = DTYPES[precision] if precision else None
    if torch.device(device).type == "cuda":  # batched copies, the dtype changed on the device
        state = {k: t.to(dtype) if dtype is not None and t.is_floating_point() else t
                 for k, t in bulk_copy.to_device(state, device)}
    model.load_state_dict(state, strict=True, assign=True)
    model.cos, model.sin = model.rope_cache(device=torch.device("cpu"))  # non-persistent buffers, still on meta
    model = model.to(device=device, dtype=dtype).eval()
    model.max_seq_length = config.block_size
    return model, Tokenizer(checkpoint_dir)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or corrupted; the message names it."""


def read_state(path: Path) -> dict:
    """The state dict of a lit_model.pth (memory-mapped), or a CheckpointError naming the file: a truncated copy or
    a save cut by a full disk otherwise surfaces as torch's zip-reader error deep in a job's log."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} ({path.stat().st_size:,} bytes) is truncated or corrupted and cannot be read:"
                              f" {str(exc).splitlines()[0]}. Rerun the stage that wrote it") from exc
    return state.get("model", state)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
