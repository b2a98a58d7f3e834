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

Both sides' figures come from the same parser (llmhpc.stages.finetune.summarise over litgpt's own report), so
tokens/s, memory and MFU mean the same on both. Speedups are against the mean of the two stock runs:
training time (litgpt's own "Training Time") and the whole invocation's wall time.

`--engine-vs-stock` instead compares the fsdp2 engine (`python -m llmhpc.train.fsdp2`) with stock on the shared
reference kit (`--kit`, a copy of ../shared/bench: its tokenizer, random Llama-2-7b checkpoint and 1024
generated records), without the workflow: the GPUs' bf16 matrix-product peak, then the engine cold (empty
compile cache) and warm, stock at its best micro batch and stock at config_hub's micro batch 4, each a whole
process timed from start to checkpoint on disk; a table last (see engine_vs_stock).
"""

from __future__ import annotations

import argparse
import copy
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

from llmhpc.stages import finetune  # noqa: E402

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
GPU_PROBE = Path(__file__).resolve().with_name("gpu_probe.py")  # GPU warm-up and bf16 peak, each its own process


def gpu_warmup() -> None:
    subprocess.run([sys.executable, str(GPU_PROBE), "warmup"], check=True)


def bf16_peak() -> float:
    """The bf16 matrix product's TFLOP/s, measured in a fresh process."""
    return float(subprocess.run([sys.executable, str(GPU_PROBE), "peak"], capture_output=True, text=True,
                                check=True).stdout.split()[-1])


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
    argv = sys.argv[1:] if argv is None else argv
    if "--engine-vs-stock" in argv:
        return engine_vs_stock([a for a in argv if a != "--engine-vs-stock"])
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


# ---------------------------------------------------------------------------------------------------------------
# The fsdp2 engine against stock on the shared reference kit (../shared/bench copied into the repo, e.g. .bench-ref)

KIT_CONFIG = {  # stock_litgpt.sh's config: config_hub llama-2-7b/full.yaml, offline data, no eval, final save only
    "precision": "bf16-true", "num_nodes": 1, "resume": False,
    "train": {"save_interval": 100000, "log_interval": 1, "global_batch_size": 64, "micro_batch_size": 4,
              "lr_warmup_steps": 25, "epochs": 1, "max_tokens": None, "max_steps": None, "max_seq_length": 512,
              "tie_embeddings": None, "max_norm": None, "min_lr": 6.0e-05},
    "eval": {"interval": 100000, "max_new_tokens": 100, "max_iters": 100, "initial_validation": False,
             "final_validation": False},
    "logger_name": "csv", "seed": 1337,
    "optimizer": {"class_path": "torch.optim.AdamW",
                  "init_args": {"lr": 0.0002, "weight_decay": 0.0, "betas": [0.9, 0.95]}},
}


# The engine runs by name: each is the defaults with the switches named here (then --engine on top); the
# waterfall runs turn one method off each. fast and fast-warm differ only in the compile cache (cold, then warm).
KIT_ENGINE_RUNS = {"fast": {}, "fast-warm": {}, "fast-fused": {"cross_entropy": "fused"},
                   "fast-nopack": {"packing": False}, "fast-nocompile": {"compile": False},
                   "fast-full-shard": {"sharding": "full"}, "fast-ac": {"activation_checkpointing": "on"},
                   "fast-sdpa": {"attention": "sdpa"}, "fast-noprefetch": {"prefetch": False}}


def kit_prep(kit: Path, bench: Path, tiny: bool, records: int, model: str | None = None) -> Path:
    """The kit's random checkpoint (its default shape, Llama-2-7b, or `model`), tokenizer and records."""
    flags = ["--tiny", "--accel", "cpu", "--dtype", "fp32"] if tiny else ["--accel", "cuda", "--dtype", "bf16"]
    flags += ["--model", model] if model else []
    subprocess.run([sys.executable, str(kit / "stock_litgpt_prep.py"), "prep", "--bench", str(bench),
                    "--num-samples", str(records), "--max-seq-length", "512", "--ckpt-file",
                    str(bench / ".ckpt_dir"), *flags], check=True)
    return Path((bench / ".ckpt_dir").read_text().strip())


def kit_yaml(path: Path, ckpt: Path, bench: Path, out: Path, gpus: int, mbs: int, precision: str,
             engine: dict | None) -> Path:
    cfg = {"checkpoint_dir": str(ckpt), "out_dir": str(out), "devices": gpus, **copy.deepcopy(KIT_CONFIG),
           "data": {"class_path": "litgpt.data.JSON",
                    "init_args": {"json_path": str(bench / "data"), "mask_prompt": False, "prompt_style": "alpaca",
                                  "ignore_index": -100, "seed": 42, "num_workers": 4}}}
    cfg["precision"], cfg["train"]["micro_batch_size"] = precision, mbs
    if engine is not None:
        cfg["engine"] = engine
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


KIT_REPORT = {  # litgpt's performance report and parameter line (both engines print them)
    "training_time_s": r"Training Time\s*:\s*([\d.]+)\s*s",
    "peak_memory_gb": r"Memory Used\s*:\s*([\d.]+)\s*GB",
    "tokens_with_prompt": r"Tokens w/ Prompt\s*:\s*(\d+)",
    "tokens_with_padding": r"Total Tokens \(w/ Padding\)\s*:\s*(\d+)",
    "trainable_parameters": r"Number of trainable parameters:\s*([\d,]+)",
}


def kit_run(name: str, cmd: list[str], out: Path, timeout_s: int, extra_env: dict | None = None) -> dict:
    """One whole fine-tune process (launch to exit, i.e. to the checkpoint on disk); its stdout in out/."""
    import re

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    print(f"=== {name}: {' '.join(cmd)} (timeout {timeout_s} s)", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", JSONARGPARSE_DEPRECATION_WARNINGS="off", **(extra_env or {}))
    t0 = time.perf_counter()
    with open(out / "stdout.txt", "w") as fh:
        code = subprocess.run(["timeout", "--kill-after=15", str(timeout_s), *cmd], stdout=fh,
                              stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t0
    text = (out / "stdout.txt").read_text(errors="replace")
    print("\n".join(line for line in text.splitlines() if "arn" not in line[:60])[-3000:], flush=True)
    rep = {}
    for key, pattern in KIT_REPORT.items():
        found = re.findall(pattern, text)
        if found:
            rep[key] = float(found[-1].replace(",", ""))
    shutil.rmtree(out / "out" / "final", ignore_errors=True)  # 13 GB of random weights
    return {"run": name, "exit": code, "wall_s": round(wall, 1), **rep}


def kit_row(r: dict, gpus: int, peak: float | None, facts: dict, ref4: dict, best: dict) -> dict:
    t = r.get("training_time_s")
    useful = r["tokens_with_prompt"] / t / gpus if t and r.get("tokens_with_prompt") else None
    mfu = None
    if useful and peak and r.get("trainable_parameters"):
        # 6 N per token for the weights, 12 L d T for attention over the sample's own length T
        flops = 6 * r["trainable_parameters"] + 12 * facts["n_layer"] * facts["n_embd"] * facts["mean_len"]
        mfu = round(100 * useful * flops / (peak * 1e12), 1)
    ratio = lambda a, b: round(a / b, 2) if a and b else None  # noqa: E731
    return {"run": r["run"], "exit": r["exit"], "training_s": t, "stage_wall_s": r["wall_s"],
            "useful_tok_s_gpu": round(useful) if useful else None, "mfu_useful_pct": mfu,
            "peak_mem_gb": r.get("peak_memory_gb"),
            "train_x_vs_mbs4": ratio(ref4.get("training_time_s"), t), "train_x_vs_best": ratio(best.get("training_time_s"), t),
            "wall_x_vs_mbs4": ratio(ref4.get("wall_s"), r["wall_s"]), "wall_x_vs_best": ratio(best.get("wall_s"), r["wall_s"])}


def engine_vs_stock(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="the fsdp2 engine against stock litgpt finetune_full (reference kit)")
    ap.add_argument("--kit", type=Path, default=REPO / ".bench-ref")
    ap.add_argument("--bench", type=Path, default=Path("/tmp/bench"))
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--records", type=int, default=1024)
    ap.add_argument("--best-mbs", type=int, default=16, help="stock's best micro batch (16: the largest 0.5.13 takes)")
    ap.add_argument("--runs", default="fast,fast-warm,stock-best,stock-4",
                    help=f"in this order, each if the deadline leaves time; engine runs: {', '.join(KIT_ENGINE_RUNS)}")
    ap.add_argument("--profile-step", type=int, default=0, help="the fast-warm run prints this step's CUDA profile")
    ap.add_argument("--engine", default="{}", help="JSON of engine switches for the fast runs")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: 2-layer toy model, fp32")
    ap.add_argument("--deadline-s", type=int, default=540)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    precision = "32-true" if args.tiny else "bf16-true"
    ckpt = kit_prep(args.kit, args.bench, args.tiny, args.records)
    peak = None if args.tiny else bf16_peak()
    print(f"measured bf16 matmul peak: {peak} TFLOP/s", flush=True)
    cache = args.bench / "inductor-cache"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ.update(TORCHINDUCTOR_CACHE_DIR=str(cache), PYTHONPATH=f"{REPO / 'src'}:{os.environ.get('PYTHONPATH', '')}")
    results = {}
    for name in args.runs.split(","):
        left = args.deadline_s - (time.perf_counter() - t_start)
        if left < 60:
            print(f"=== {name}: skipped, {left:.0f} s left of the deadline", flush=True)
            continue
        fast = name.startswith("fast")
        mbs = {"stock-best": args.best_mbs, "stock-4": 4}.get(name, 4)
        engine = {**KIT_ENGINE_RUNS.get(name, {}), **json.loads(args.engine)} if fast else None
        cfg = kit_yaml(args.bench / f"{name}.yaml", ckpt, args.bench, args.bench / name / "out", args.gpus, mbs,
                       precision, engine)
        cmd = ([sys.executable, "-m", "llmhpc.train.fsdp2"] if fast else [sys.executable, "-m", "litgpt", "finetune_full"])
        env = {"LLMHPC_FSDP2_PROFILE_STEP": str(args.profile_step)} if name == "fast-warm" and args.profile_step else {}
        results[name] = kit_run(name, cmd + ["--config", str(cfg)], args.bench / name, int(left - 20), env)
        if name == "fast" and results[name]["exit"] != 0:
            print(f"=== {name} failed: the remaining runs are skipped", flush=True)
            break
    kit_table(results, ckpt, args, peak)
    return 0 if all(r["exit"] == 0 for r in results.values()) else 1


def kit_table(results: dict, ckpt: Path, args, peak: float | None) -> None:
    import statistics

    config = yaml.safe_load((ckpt / "model_config.yaml").read_text())
    sample_tokens = [r.get("tokens_with_prompt") for r in results.values() if r.get("tokens_with_prompt")]
    facts = {"n_layer": config["n_layer"], "n_embd": config["n_embd"],
             "mean_len": statistics.mean(sample_tokens) / args.records if sample_tokens else 0}
    ref4, best = results.get("stock-4", {}), results.get("stock-best", {})
    rows = [kit_row(r, args.gpus, peak, facts, ref4, best) for r in results.values()]
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                         text=True) if shutil.which("nvidia-smi") else None
    device = smi.stdout.splitlines()[0].strip() if smi and smi.stdout.strip() else "cpu"
    header = (f"{args.gpus} x {device}, measured bf16 peak {peak and round(peak)} TFLOP/s; model {config.get('name')}"
              f"{' (tiny)' if args.tiny else ''}, {args.records} records, max_seq_length 512, global batch 64; "
              f"stock best micro batch {args.best_mbs}\n\n")
    print("\n" + header + "\n".join(markdown(rows, with_source=False)), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    sys.exit(main())
