"""How fast a checkpoint's weights reach the GPU from the page cache, each way the project has loaded them.

    python bench/load_speed.py DIR                   # Llama-2-7b shape in bf16 (13.5 GB), made in DIR if absent
    python bench/load_speed.py DIR --shape pythia-160m --device cpu    # the same steps on a laptop

Makes a random lit_model.pth of LitGPT's config for --shape (written as LitGPT saves one), reads it once so that
the page cache holds it, then times, --runs times each, a full copy of every tensor to the device:
  per-tensor       `.to(device)` of each memory-mapped tensor in turn (how the fine-tune engine loaded)
  per-tensor x8    the same from 8 threads (how the fast scorer loaded)
  torch.load cuda  torch.load(map_location=device), torch's own
  batched xN       llmhpc.bulk_copy with N host-copy threads
and the project's loaders end to end: the scorer's load_model_part and the engine's load_into (a bf16 GPT on the
device, the checkpoint copied into its parameters). GB/s = the file's bytes over the seconds. Prints a table last.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from llmhpc import bulk_copy, litgpt_core  # noqa: E402


def make_checkpoint(d: Path, shape: str, device: str) -> Path:
    path = d / "lit_model.pth"
    if path.is_file():
        return path
    import yaml

    litgpt_core.load()
    from litgpt import GPT, Config

    config = Config.from_name(shape)
    d.mkdir(parents=True, exist_ok=True)
    (d / "model_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config)))  # as LitGPT saves it
    with torch.device("meta"):
        names = {k: v.shape for k, v in GPT(config).state_dict().items()}
    g = torch.Generator(device=device).manual_seed(0)
    state = {k: (torch.randn(s, generator=g, device=device, dtype=torch.bfloat16) * 0.02).cpu() for k, s in names.items()}
    torch.save({"model": state}, path)
    return path


def warm(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(64 << 20):
            pass


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def mapped(path: Path) -> dict:
    return torch.load(path, mmap=True, weights_only=True, map_location="cpu")["model"]


def per_tensor(path, device, threads=1):
    state = mapped(path)
    if threads == 1:
        return {k: v.to(device) for k, v in state.items()}
    with ThreadPoolExecutor(threads) as pool:
        futures = {k: pool.submit(v.to, device) for k, v in state.items()}
        return {k: f.result() for k, f in futures.items()}


def torch_load(path, device):
    return torch.load(path, weights_only=True, map_location=device)["model"]


def batched(path, device, threads):
    return dict(bulk_copy.to_device(mapped(path), device, threads=threads))


def scorer(path, device):
    from llmhpc.eval.loading import load_model_part

    return load_model_part(path.parent, "bf16-true" if device.startswith("cuda") else "32-true", device)[0]


def engine(path, device):
    from litgpt import GPT, Config

    from llmhpc.train.fsdp2 import checkpoint

    with torch.device("meta"):
        gpt = GPT(Config.from_file(path.parent / "model_config.yaml"))
    gpt = gpt.to_empty(device=device).to(torch.bfloat16 if device.startswith("cuda") else torch.float32)
    checkpoint.load_into(gpt, checkpoint.read_state(path.parent))
    return gpt


def timed(fn, device, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        sync(device)
        t = time.perf_counter()
        result = fn()
        sync(device)
        out.append(time.perf_counter() - t)
        del result
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--shape", default="Llama-2-7b-hf")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated way names to run (default: all)")
    a = ap.parse_args()
    litgpt_core.load()
    t = time.perf_counter()
    path = make_checkpoint(Path(a.dir), a.shape, a.device)
    size = path.stat().st_size
    print(f"checkpoint {path}: {size / 1e9:.2f} GB ({time.perf_counter() - t:.1f} s to make or find)", flush=True)
    warm(path)
    sync(a.device)
    torch.empty(1, device=a.device)  # the device's context is not part of any way's time
    ways = {
        "per-tensor": lambda: per_tensor(path, a.device),
        "per-tensor x8": lambda: per_tensor(path, a.device, 8),
        "torch.load to device": lambda: torch_load(path, a.device),
        "batched x1": lambda: batched(path, a.device, 1),
        "batched x8": lambda: batched(path, a.device, 8),
        "batched x16": lambda: batched(path, a.device, 16),
        "scorer load_model_part": lambda: scorer(path, a.device),
        "engine load_into": lambda: engine(path, a.device),
    }
    only = [w.strip() for w in a.only.split(",") if w.strip()]
    rows = []
    for name, fn in ways.items():
        if only and name not in only:
            continue
        times = timed(fn, a.device, a.runs)
        med = statistics.median(times)
        rows.append((name, med, min(times), size / med / 1e9))
        print(f"{name}: {' '.join(f'{x:.2f}' for x in times)} s", flush=True)
    dev = torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else "cpu"
    print(f"\n{a.shape}, {size / 1e9:.2f} GB from the page cache to {dev}, {a.runs} runs each")
    print("| way | median s | best s | GB/s (median) |\n|---|---|---|---|")
    for name, med, best, rate in rows:
        print(f"| {name} | {med:.2f} | {best:.2f} | {rate:.1f} |")


if __name__ == "__main__":
    main()
