#!/usr/bin/env python3
"""GPU steps the fine-tune benchmarks (bench/finetune_vs_stock.py, bench/lora_vs_stock.py) run in a process of
their own, so that what they allocate is given back before the measured runs:

  warmup   fill 90% of the free GPU memory once, then 15 s of bf16 8192^3 matrix products (clocks up); no-op
           without a GPU
  peak     the bf16 8192^3 matrix product's TFLOP/s (40 products after 5 warm-up ones), printed last
"""

from __future__ import annotations

import argparse
import time


def warmup() -> None:
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        block = torch.empty(int(free * 0.9), dtype=torch.uint8, device="cuda")
        block.fill_(1)
        del block
        torch.cuda.empty_cache()
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 15:
            (a @ a).sum().item()


def peak() -> None:
    import torch

    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        x @ x
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(40):
        x @ x
    torch.cuda.synchronize()
    print(2 * 8192**3 * 40 / (time.perf_counter() - t0) / 1e12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["warmup", "peak"])
    {"warmup": warmup, "peak": peak}[ap.parse_args().cmd]()


if __name__ == "__main__":
    main()
