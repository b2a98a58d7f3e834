"""The weights and convert stages: a Hugging Face model directory from one of three sources, then LitGPT's
own converter into a checkpoint directory that is checked loadable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# What a download takes: weights as safetensors only (no pickles), the configs and the tokenizer.
HF_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
               "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class WeightsError(RuntimeError):
    """The weights cannot be used; the message names the directory or file."""


def fetch(model: dict, out_dir, log=print) -> dict:
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    if model["source"] == "tiny":
        from llmhpc.sources.tiny import write_tiny_model

        info = write_tiny_model(out_dir, model["name"], model["tiny_vocab_size"], model["seed"],
                                model["tiny_dtype"])
    elif model["source"] == "hf":
        info = download_hf(model["repo_id"], model["revision"], out_dir)
    else:
        info = link_path(Path(model["path"]), out_dir)
    check_hf_dir(out_dir)
    log(f"weights ready in {out_dir}: {info}")
    return info


def download_hf(repo_id: str, revision: str, out_dir: Path) -> dict:
    """snapshot_download of the safetensors, configs and tokenizer at a pinned revision. The token is read
    from HF_TOKEN by huggingface_hub itself and is never passed on, printed or written."""
    from huggingface_hub import snapshot_download

    path = snapshot_download(repo_id=repo_id, revision=revision, local_dir=str(out_dir),
                             allow_patterns=HF_PATTERNS, token=os.environ.get("HF_TOKEN") or None)
    shutil.rmtree(Path(path) / ".cache", ignore_errors=True)  # hub bookkeeping, not part of the model
    return {"repo_id": repo_id, "revision": revision, "files": sorted(p.name for p in Path(path).iterdir())}


def link_path(src: Path, out_dir: Path) -> dict:
    """A pre-staged copy (clusters keep shared ones): link its files rather than copy tens of GB."""
    if not src.is_dir():
        raise WeightsError(f"model.path {src} is not a directory")
    out_dir.mkdir(parents=True)
    names = []
    for f in sorted(src.iterdir()):
        if f.is_file():
            (out_dir / f.name).symlink_to(f.resolve())
            names.append(f.name)
    return {"path": str(src), "files": names}


def check_hf_dir(path: Path) -> None:
    names = {p.name for p in Path(path).iterdir()}
    if "config.json" not in names:
        raise WeightsError(f"{path}: config.json is missing")
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in names):
        raise WeightsError(f"{path}: no *.safetensors or *.bin weight files")
    if not ({"tokenizer.json", "tokenizer.model"} & names):
        raise WeightsError(f"{path}: no tokenizer (tokenizer.json or tokenizer.model)")


def convert(weights_dir, out_dir, model_name: str, log=print) -> dict:
    """Run `litgpt convert_to_litgpt` on a staging copy (configs copied, weight files linked), keep the LitGPT
    checkpoint and the tokenizer files, and load it back to prove it is usable."""
    weights_dir, out_dir = Path(weights_dir), Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    linked = []
    # Safetensors when there are any: litgpt's converter would load every *.bin beside them (pickles, twice the
    # weights) and prefers pytorch_model.bin.index.json over model.safetensors.index.json.
    safetensors = any(f.name.endswith(".safetensors") for f in weights_dir.iterdir())
    for f in sorted(weights_dir.iterdir()):
        if safetensors and (f.name.endswith(".bin") or f.name == "pytorch_model.bin.index.json"):
            continue
        if f.name.endswith(WEIGHT_SUFFIXES) or f.name.endswith(".index.json"):
            (out_dir / f.name).symlink_to(f.resolve())
            linked.append(out_dir / f.name)
        elif f.is_file():
            shutil.copyfile(f, out_dir / f.name)
    cmd = [sys.executable, "-m", "litgpt", "convert_to_litgpt", str(out_dir), "--model_name", model_name]
    log("running: " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log(proc.stdout + proc.stderr)
    for link in linked:
        link.unlink()
    if proc.returncode != 0:
        raise WeightsError(f"litgpt convert_to_litgpt failed with exit code {proc.returncode} (see the log above)")
    return check_loadable(out_dir, log)


def check_loadable(checkpoint_dir: Path, log=print) -> dict:
    """Load the checkpoint strictly and run one forward pass; return what was checked."""
    import torch

    from llmhpc.eval.checkpoint import load_litgpt

    model, tokenizer = load_litgpt(checkpoint_dir, None, "cpu")  # strict: every tensor present and shaped right
    info = {"parameters": sum(p.numel() for p in model.parameters()), "forward": False}
    if info["parameters"] < 1e9:  # a forward pass on a login-node-sized CPU only for small models
        ids = tokenizer.encode("Hello", bos=False).unsqueeze(0)
        with torch.inference_mode():
            logits = model.float()(ids)
        if not torch.isfinite(logits).all():
            raise WeightsError(f"{checkpoint_dir}: the converted model gives non-finite logits")
        info["forward"] = True
    log(f"checkpoint {checkpoint_dir} loads: {info}")
    return info
