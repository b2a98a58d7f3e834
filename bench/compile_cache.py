"""What a persistent compile cache (site.compile_cache) saves a job: the fsdp2 engine's start-up with compiled
blocks, run twice on one tiny model, each run a fresh process with the same TORCHINDUCTOR_CACHE_DIR (empty before
the first), as two jobs of one experiment would be. CPU (inductor's C++ backend); on a GPU the same code path
compiles Triton kernels instead. The model is the package's tiny LitGPT checkpoint
(llmhpc.eval.tinyckpt.write_tiny_litgpt: Llama shape, 2 layers, 32 wide, 512-token BPE) and the data the first 32
records of the embedded Alpaca set (llmhpc.sources.embedded).

    python bench/compile_cache.py [--runs 3]

Prints each run's "compile and warm-up" and start-up seconds as the engine reports them, and the warm/cold ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))  # the package from this checkout, as the engine runs get it below

STARTUP = re.compile(r"Start-up to training: ([\d.]+) s \(compile and warm-up ([\d.]+) s\)")


def make(root: Path, n: int) -> Path:
    """root/ckpt: the tiny LitGPT checkpoint; root/data: n training and 6 validation Alpaca records."""
    from llmhpc.eval.tinyckpt import write_tiny_litgpt
    from llmhpc.sources import embedded

    write_tiny_litgpt(root / "ckpt", family="llama", n_layer=2, vocab_size=512, block_size=256, n_embd=32)
    train, val = embedded.finetune_records()
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data/train.json").write_text(json.dumps(train[:n]))
    (root / "data/val.json").write_text(json.dumps(val[:6]))
    return root


def write_config(root: Path, out: str, *, gbs: int, mbs: int, max_seq_length: int, engine: dict) -> Path:
    """The fsdp2 engine's YAML as the finetune stage writes it (llmhpc.train.litgpt.litgpt_config): one epoch, fp32,
    no validation and no intermediate saves; `engine`: the engine's switches (finetune.engine_options)."""
    from llmhpc.train.litgpt import litgpt_config

    ft = {"engine": "fsdp2", "precision": "32-true", "global_batch_size": gbs, "micro_batch_size": mbs,
          "max_seq_length": max_seq_length, "epochs": 1, "lr_warmup_steps": 2, "learning_rate": 0.01,
          "weight_decay": 0.01, "min_lr": 6e-5, "save_interval": 1000000, "eval_interval": 1000000,
          "eval_max_iters": 2, "eval_max_new_tokens": 5, "final_validation": False, "data_num_workers": 0,
          "engine_options": engine}
    cfg = litgpt_config(ft, root / "ckpt", root / "data", root / out)
    cfg["resume"] = False  # every run starts afresh: the cache, not a step checkpoint, is what is measured
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


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
        root = make(Path(tmp), n=32)
        for i in range(args.runs):
            cache = Path(tmp) / f"cache-{i}"
            for kind in ("cold", "warm"):
                config_path = write_config(root, f"{kind}-{i}", gbs=4, mbs=2, max_seq_length=128,
                                           engine={"compile": True})  # auto would not compile a job this small
                startup, warm_up = engine_run(config_path, cache)
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
