"""The convert stage: a Hugging Face model directory to a LitGPT checkpoint, checked by loading it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

# What a download takes: weights as safetensors only (no pickles), the configs and the tokenizer.
from llmhpc.stages.weights import WEIGHT_SUFFIXES, WeightsError


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
    # LitGPT's CLI through llmhpc.train.stock_run: the command as it is, and an exit 2 s shorter
    cmd = [sys.executable, "-m", "llmhpc.train.stock_run", "convert_to_litgpt", str(out_dir), "--model_name",
           model_name]
    log("running: " + " ".join(cmd))
    # The load check's imports (torch and LitGPT's model, a few seconds) run while the converter does, rather
    # than after it: this process only waits for the converter meanwhile.
    imports = threading.Thread(target=_import_checker, daemon=True)
    imports.start()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    imports.join()
    log(proc.stdout + proc.stderr)
    for link in linked:
        link.unlink()
    if proc.returncode != 0:
        raise WeightsError(f"litgpt convert_to_litgpt failed with exit code {proc.returncode} (see the log above)")
    return check_loadable(out_dir, log)


def _import_checker() -> None:
    import torch  # noqa: F401

    from llmhpc import litgpt_checkpoint, litgpt_core  # noqa: F401

    litgpt_core.load()


def check_loadable(checkpoint_dir: Path, log=print) -> dict:
    """Load the checkpoint strictly and run one forward pass; return what was checked."""
    import torch

    from llmhpc.litgpt_checkpoint import load_litgpt

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
