"""The workflow's fine-tune stage against stock `litgpt finetune_full`, on the same checkpoint and data, in one run:

    python bench/finetune_vs_stock.py [--config config/examples/bench-llama2-7b.yaml] [--records 1024]

1. writes the generated Alpaca set (bench/make_alpaca.py) to the config's data path;
2. runs the workflow up to the converted base checkpoint and the prepared data (weights, convert, data);
3. warms the GPU up (its memory touched once, 15 s of matrix products): the first process on a fresh machine
   otherwise pays seconds of first-use costs that the runs after it do not;
4. stock: `python -m litgpt finetune_full --config stock.yaml`, where stock.yaml is litgpt's
   config_hub/finetune/llama-2-7b/full.yaml (written out below) pointed at the same checkpoint and data, with
   validation and intermediate saves off as in the shared reference benchmark (../shared/bench);
5. the workflow: `snakemake <results/finetune/EXP/summary.json>` for each experiment of the config, each timed
   as a whole invocation (Snakemake start-up, the LitGPT config job, the fine-tune job and its summary);
6. stock again, so that the table shows how far two identical runs differ;
7. prints a table and writes it, with every figure's source, to results/bench/finetune_vs_stock.{csv,md}.

Both sides' figures come from the same parser (llmhpc.finetune.summarise over litgpt's own report), so
tokens/s, memory and MFU mean the same on both. Speedups are against the mean of the two stock runs:
training time (litgpt's own "Training Time") and the whole invocation's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from llmhpc import finetune  # noqa: E402

# litgpt 0.5.13 config_hub/finetune/llama-2-7b/full.yaml; only paths, devices and the benchmark-only switches
# (no validation, no intermediate saves: the shared reference benchmark does the same) differ.
STOCK_YAML = """\
checkpoint_dir: {checkpoint}
out_dir: {out}
precision: {precision}
devices: 1
num_nodes: 1
resume: false
data:
  class_path: litgpt.data.JSON
  init_args:
    json_path: {data}
    mask_prompt: false
    prompt_style: alpaca
    ignore_index: -100
    seed: 42
    num_workers: 4
train:
  save_interval: 100000
  log_interval: 1
  global_batch_size: 64
  micro_batch_size: 4
  lr_warmup_steps: 25
  epochs: 1
  max_tokens:
  max_steps:
  max_seq_length: 512
  tie_embeddings:
  max_norm:
  min_lr: 6.0e-05
eval:
  interval: 100000
  max_new_tokens: 100
  max_iters: 100
  initial_validation: false
  final_validation: false
logger_name: csv
seed: 1337
optimizer:
  class_path: torch.optim.AdamW
  init_args:
    lr: 0.0002
    weight_decay: 0.0
    betas:
    - 0.9
    - 0.95
"""
STOCK_SETTINGS = {"method": "full", "devices": 1, "num_nodes": 1,
                  "global_batch_size": 64, "micro_batch_size": 4}


def snakemake(config: Path, *targets: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", "--configfile", str(config), "--cores", "all", "--", *targets]
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.perf_counter() - t0


# Run in a child process, so that this one never holds a CUDA context or cached GPU memory.
WARMUP = """
import time, torch
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
"""


def gpu_warmup() -> None:
    subprocess.run([sys.executable, "-c", WARMUP], check=True)


def run_stock(bench_dir: Path, precision: str, name: str = "stock") -> dict:
    out = bench_dir / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    config = out / "stock.yaml"
    config.write_text(STOCK_YAML.format(checkpoint=REPO / "results/checkpoints/base", out=out / "out",
                                        data=REPO / "results/data/finetune", precision=precision))
    cmd = [sys.executable, "-m", "litgpt", "finetune_full", "--config", str(config)]
    t0 = time.perf_counter()
    code, wall, rss = finetune.run(cmd, out / "finetune.stdout")
    invocation = time.perf_counter() - t0
    text = (out / "finetune.stdout").read_text(errors="replace")
    if code != 0:
        sys.exit(f"stock litgpt finetune_full failed ({code}):\n" + "\n".join(text.splitlines()[-30:]))
    csv_path = finetune.find_metrics_csv(out / "out")
    settings = dict(STOCK_SETTINGS, precision=precision)
    summary = finetune.summarise(text, finetune.read_metrics_csv(csv_path), settings, wall, code,
                                 finetune.model_facts(REPO / "results/checkpoints/base"),
                                 finetune.gpu_name(), None, rss)
    summary.update(command=" ".join(cmd), invocation_wall_s=round(invocation, 3))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    shutil.rmtree(out / "out" / "final", ignore_errors=True)  # 13 GB of random weights
    return summary


def row(name: str, s: dict, stock: dict, source: str) -> dict:
    """One table row; `stock` holds the reference training and invocation times."""
    r = {"run": name, "micro_batch_size": s["micro_batch_size"], "training_time_s": s["training_time_s"],
         "tokens_per_s": s["tokens_per_s"], "peak_memory_gb": s["peak_memory_gb"], "mfu": s["mfu"],
         "litgpt_wall_s": s["stage_wall_s"], "invocation_wall_s": s["invocation_wall_s"], "source": source}
    r["speedup_training"] = round(stock["training_time_s"] / s["training_time_s"], 3)
    r["speedup_wall"] = round(stock["invocation_wall_s"] / s["invocation_wall_s"], 3)
    return r


def markdown(rows: list[dict], with_source=True) -> list[str]:
    cols = [c for c in rows[0] if with_source or c != "source"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]


def write_table(bench_dir: Path, header: str, rows: list[dict]) -> None:
    import csv

    with open(bench_dir / "finetune_vs_stock.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (bench_dir / "finetune_vs_stock.md").write_text(header + "\n".join(markdown(rows)) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("config/examples/bench-llama2-7b.yaml"))
    ap.add_argument("--records", type=int, default=1024)
    ap.add_argument("--precision", default="bf16-true", help="stock side's precision (32-true for a CPU smoke run)")
    args = ap.parse_args(argv)
    config = yaml.safe_load((REPO / args.config).read_text())
    experiments = [e["name"] for e in config["experiments"]]

    subprocess.run([sys.executable, str(REPO / "bench/make_alpaca.py"), config["data"]["finetune"]["path"],
                    "--records", str(args.records)], cwd=REPO, check=True)
    prep = snakemake(args.config, "results/checkpoints/base", "results/data/finetune/train.json")
    print(f"weights + convert + data: {prep:.1f} s", flush=True)

    bench_dir = REPO / "results/bench"
    gpu_warmup()
    first = run_stock(bench_dir, args.precision)
    header = (f"{first['device']}; model {finetune.model_facts(REPO / 'results/checkpoints/base')['name']}, "
              f"{args.records} records, config {args.config}\n\n")
    ours = []
    for exp in experiments:
        wall = snakemake(args.config, f"results/finetune/{exp}/summary.json")
        s = json.loads((REPO / f"results/finetune/{exp}/summary.json").read_text())
        s["invocation_wall_s"] = round(wall, 3)
        ours.append((exp, s))
        shutil.rmtree(REPO / f"results/finetune/{exp}/out/final", ignore_errors=True)  # 13 GB of random weights
        write_table(bench_dir, header, [row("stock litgpt finetune_full", first, first,
                                            "results/bench/stock/finetune.stdout")]
                    + [row(f"workflow {e}", x, first, f"results/finetune/{e}/finetune.stdout") for e, x in ours])
    second = run_stock(bench_dir, args.precision, "stock-repeat")
    reference = {k: (first[k] + second[k]) / 2 for k in ("training_time_s", "invocation_wall_s")}
    rows = [row("stock litgpt finetune_full", first, reference, "results/bench/stock/finetune.stdout"),
            row("stock litgpt finetune_full (repeat)", second, reference, "results/bench/stock-repeat/finetune.stdout")]
    rows += [row(f"workflow {e}", x, reference, f"results/finetune/{e}/finetune.stdout") for e, x in ours]
    header += (f"Speedups against the mean of the two stock runs (training {reference['training_time_s']:.2f} s,"
               f" invocation {reference['invocation_wall_s']:.1f} s).\n\n")
    write_table(bench_dir, header, rows)
    print(header + "\n".join(markdown(rows, with_source=False)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    sys.exit(main())
