"""Where the fine-tune engine's final save spends its time: the ways of getting a Llama-2-7b-shape bf16 state
dict (13.5 GB) from the GPU into a `lit_model.pth` that torch.load reads, timed one after the other on one GPU.

    python bench/save_paths.py --out /tmp/save-bench [--layers 32]

Each way writes the same file and reads it back (a few tensors compared). Prints a table last.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch


def shapes(layers: int, d: int = 4096, hidden: int = 11008, vocab: int = 32000) -> dict[str, tuple]:
    out = {"transformer.wte.weight": (vocab, d), "lm_head.weight": (vocab, d), "transformer.ln_f.weight": (d,)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        out |= {p + "norm_1.weight": (d,), p + "norm_2.weight": (d,), p + "attn.qkv.weight": (3 * d, d),
                p + "attn.proj.weight": (d, d), p + "mlp.fc_1.weight": (hidden, d), p + "mlp.fc_2.weight": (hidden, d),
                p + "mlp.proj.weight": (d, hidden)}
    return out


def save(state: dict, path: Path, pinned_d2h: bool = False, crc: bool = False) -> None:
    from torch.utils.serialization import config

    with config.patch({"save.compute_crc32": crc, "save.use_pinned_memory_for_d2h": pinned_d2h}):
        torch.save({"model": state}, path)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def to_pageable(gpu: dict) -> dict:
    out = {k: v.to("cpu", non_blocking=True) for k, v in gpu.items()}
    sync()
    return out


def to_pinned(gpu: dict) -> tuple[dict, float]:
    t0 = time.perf_counter()
    total = sum(v.numel() for v in gpu.values())
    flat = torch.empty(total, dtype=torch.bfloat16, pin_memory=torch.cuda.is_available())
    alloc = time.perf_counter() - t0
    out, at = {}, 0
    for k, v in gpu.items():
        out[k] = flat[at:at + v.numel()].view(v.shape)
        out[k].copy_(v, non_blocking=True)
        at += v.numel()
    sync()
    return out, alloc


def timed(fn) -> float:
    return timed_value(fn)[0]


def timed_value(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def drop(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.sync()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/save-bench"))
    parser.add_argument("--layers", type=int, default=32)
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(0)
    gpu = {k: torch.randn(s, generator=gen, device=device, dtype=torch.bfloat16) for k, s in shapes(opts.layers).items()}
    gb = sum(v.numel() * 2 for v in gpu.values()) / 1e9
    print(f"{gb:.2f} GB on {device}; writing to {opts.out} ({shutil.disk_usage(opts.out).free / 1e9:.0f} GB free)")
    rows = []
    path = opts.out / "lit_model.pth"

    t_page, cpu_state = timed_value(lambda: to_pageable(gpu))
    t_write = timed(lambda: save(cpu_state, path, crc=True))
    rows.append(("pageable copies, then torch.save with CRC32 (today)", t_page, t_write))
    check(path, gpu)
    drop(path)
    rows.append(("same, torch.save without CRC32", t_page, timed(lambda: save(cpu_state, path))))
    check(path, gpu)
    drop(path)
    del cpu_state

    t0 = time.perf_counter()
    pinned, alloc = to_pinned(gpu)
    t_pin = time.perf_counter() - t0
    t_write = timed(lambda: save(pinned, path))
    rows.append((f"one pinned buffer (alloc {alloc:.1f} s), then torch.save", t_pin, t_write))
    check(path, gpu)
    drop(path)
    pinned = None  # noqa: F841 - frees the pinned buffer

    rows.append(("torch.save of the GPU tensors", 0.0, timed(lambda: save(gpu, path))))
    check(path, gpu)
    drop(path)
    rows.append(("torch.save of the GPU tensors, pinned D2H", 0.0, timed(lambda: save(gpu, path, True))))
    check(path, gpu)
    drop(path)

    shm = Path("/dev/shm/save-bench.pth")
    cpu_state = to_pageable(gpu)
    rows.append(("pageable, torch.save to /dev/shm (no disk)", 0.0, timed(lambda: save(cpu_state, shm))))
    shm.unlink()
    raw = opts.out / "raw.bin"
    flat = torch.cat([v.reshape(-1) for v in cpu_state.values()])
    rows.append(("one raw write of the bytes (disk ceiling)", 0.0,
                 timed(lambda: raw.write_bytes(flat.view(torch.uint8).numpy().tobytes()))))
    drop(raw)

    print(f"\n| way ({gb:.1f} GB) | to CPU s | write s | total s | GB/s |")
    print("|---|---:|---:|---:|---:|")
    for name, a, b in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {a + b:.2f} | {gb / (a + b):.2f} |")


def check(path: Path, gpu: dict) -> None:
    back = torch.load(path, mmap=True, weights_only=True, map_location="cpu")["model"]
    for k in list(gpu)[:3] + list(gpu)[-2:]:
        assert torch.equal(back[k].cpu(), gpu[k].cpu()), k


if __name__ == "__main__":
    main()
