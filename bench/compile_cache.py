"""What a persistent compile cache (site.compile_cache) saves a job: the fsdp2 engine's start-up with compiled
blocks, run twice on one tiny model, each run a fresh process with the same TORCHINDUCTOR_CACHE_DIR (empty before
the first), as two jobs of one experiment would be. CPU (inductor's C++ backend); on a GPU the same code path
compiles Triton kernels instead.

    python bench/compile_cache.py [--runs 3]

Prints each run's "compile and warm-up" and start-up seconds as the engine reports them, and the warm/cold ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/train"))  # the tests' tiny LitGPT model, tokenizer and data

import fsdp2_tiny  # noqa: E402

STARTUP = re.compile(r"Start-up to training: ([\d.]+) s \(compile and warm-up ([\d.]+) s\)")


def engine_run(config: Path, cache: Path) -> tuple[float, float]:
    env = dict(os.environ, LLMHPC_FSDP2_COMPILE_CPU="1", TORCHINDUCTOR_CACHE_DIR=str(cache),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
               JSONARGPARSE_DEPRECATION_WARNINGS="off")
    proc = subprocess.run([sys.executable, "-m", "llmhpc.train.fsdp2", "--config", str(config)], env=env,
                          capture_output=True, text=True)
    found = STARTUP.search(proc.stdout)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"engine run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return float(found[1]), float(found[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="cold/warm pairs, each with its own empty cache")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = fsdp2_tiny.make(Path(tmp), n=32)
        for i in range(args.runs):
            cache = Path(tmp) / f"cache-{i}"
            for kind in ("cold", "warm"):
                config = fsdp2_tiny.config(root, f"{kind}-{i}", gbs=4, mbs=2, max_seq_length=128,
                                          engine={"compile": True})  # auto would not compile a job this small
                startup, warm_up = engine_run(config, cache)
                rows.append((i, kind, startup, warm_up))
                print(f"pair {i} {kind}: start-up {startup:.2f} s, compile and warm-up {warm_up:.2f} s", flush=True)
    med = {k: statistics.median(r[3] for r in rows if r[1] == k) for k in ("cold", "warm")}
    start = {k: statistics.median(r[2] for r in rows if r[1] == k) for k in ("cold", "warm")}
    print(f"\n{os.cpu_count()} CPUs, {args.runs} pairs (median)\n")
    print("| cache | compile and warm-up (s) | start-up to training (s) |\n|---|---|---|")
    for k in ("cold", "warm"):
        print(f"| {k} | {med[k]:.2f} | {start[k]:.2f} |")
    print(f"\nwarm/cold: compile and warm-up {med['warm'] / med['cold']:.2f}x, start-up {start['warm'] / start['cold']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
