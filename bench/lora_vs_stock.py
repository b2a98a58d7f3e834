"""The fsdp2 engine's LoRA family and float8 against stock `litgpt finetune_lora`, in one device call:

    python bench/lora_vs_stock.py --gpus 2 [--steps 3] [--runs fast-lora,stock-lora,...]
    python bench/lora_vs_stock.py --cpu-smoke        # the same code path on a 2-layer model, one CPU process

Llama-3.1-8B shape (litgpt's Config, random bf16 weights written on the device by the shared reference kit's
`stock_litgpt_prep.py`, so nothing is downloaded), generated Alpaca records, max_seq_length 512, effective batch
256 (stock: micro batch 16 per GPU, accumulated), the same LoRA settings on both sides (r 16, alpha 32, dropout
0.05, every Linear of the blocks). Runs, each a whole process: stock `litgpt finetune_lora`; the engine with method
lora, dora and qlora; the engine's full fine-tune in bf16 and with float8. A bf16 matrix-product peak is
measured first, in the same call.

Only the training phase is the benchmark: a run is stopped once its performance report is out (stock then merges
and saves 16 GB on the CPU), except those named in `--finish`, which also write their merged checkpoint.
The table, printed last, has samples/s (the ISC25 score: samples / training time),
step time and its ratios (engine LoRA against stock, DoRA against LoRA, float8 against bf16), MFU against the
measured peak (model FLOPs per useful token: 6 N for full, 4 N for adapters, which skip the weight gradients,
plus 12 L d T for attention), and for float8 the largest relative difference of its per-step losses from bf16's.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from finetune_vs_stock import bf16_peak, kit_prep  # the shared kit's preparation and the bf16 peak (same folder)

REPO = Path(__file__).resolve().parents[1]
GBS = 256
# Dropout 0 (torchtune's Llama 3 LoRA recipes): with dropout, DoRA as peft and the paper's code define it takes a
# second base matmul on the dropped-out input, about doubling its cost over LoRA's (--lora-dropout to measure that).
LORA = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "lora_query": True, "lora_key": True,
        "lora_value": True, "lora_projection": True, "lora_mlp": True, "lora_head": False}
RUNS = {  # name: (command kind, engine switches), in the order they run: the targets' comparisons first
    "fast-lora": ("fast", {"method": "lora"}),
    "stock-lora": ("stock", None),
    "fast-dora": ("fast", {"method": "dora"}),
    # full fine-tune at 8B on 2 GPUs: weights, gradients and AdamW states (64 GB) sharded, resharded after forward
    "fast-full": ("fast", {"method": "full", "sharding": "full"}),
    "fast-full-float8": ("fast", {"method": "full", "sharding": "full", "float8": True}),
    # the same pair as a user gets it (engine.sharding auto: grad_op on one node where it fits, no re-gather in
    # backward), to run beside the pair above when looking for where float8's step time goes
    "fast-full-auto": ("fast", {"method": "full"}),
    "fast-full-float8-auto": ("fast", {"method": "full", "float8": True}),
    # float8 with shape-generic compiled graphs, as before engine.compile_shapes auto went static for packed float8
    # runs (a generic amax reduction took 0.9 ms a layer: 1.25x bf16 instead of 1.32x); bf16's auto is this already
    "fast-full-float8-dynamic": ("fast", {"method": "full", "float8": True, "compile_shapes": "dynamic"}),
    "fast-qlora": ("fast", {"method": "qlora"}),
}
REPORT = {
    "training_time_s": r"Training Time\s*:\s*([\d.]+)\s*s",
    "peak_memory_gb": r"Memory Used\s*:\s*([\d.]+)\s*GB",
    "tokens_with_prompt": r"Tokens w/ Prompt\s*:\s*(\d+)",
    "trainable": r"Number of trainable parameters:\s*([\d,]+)",
    "frozen": r"Number of non-trainable parameters:\s*([\d,]+)",
}


def write_yaml(path: Path, ckpt: Path, bench: Path, gpus: int, smoke: bool, engine: dict | None,
               warmup: int = 1) -> Path:
    """config_hub-style finetune_lora settings, the same for stock and the engine (which adds `engine:`)."""
    cfg = {"checkpoint_dir": str(ckpt), "out_dir": str(path.parent / "out"), "devices": gpus, "num_nodes": 1,
           "precision": "32-true" if smoke else "bf16-true", **LORA,
           "data": {"class_path": "litgpt.data.JSON",
                    "init_args": {"json_path": str(bench / "data"), "mask_prompt": False, "prompt_style": "alpaca",
                                  "ignore_index": -100, "seed": 42, "num_workers": 4}},
           "train": {"save_interval": 100000, "log_interval": 1, "global_batch_size": GBS // 32 if smoke else GBS,
                     "micro_batch_size": 4 if smoke else 16, "lr_warmup_steps": warmup, "epochs": 1, "max_tokens": None,
                     "max_steps": None, "max_seq_length": 512, "tie_embeddings": None, "max_norm": None,
                     "min_lr": 6.0e-05},
           "eval": {"interval": 100000, "max_new_tokens": 100, "max_iters": 100, "initial_validation": False,
                    "final_validation": False},
           "logger_name": "csv", "seed": 1337,
           "optimizer": {"class_path": "torch.optim.AdamW",
                         "init_args": {"lr": 0.0002, "weight_decay": 0.0, "betas": [0.9, 0.95]}}}
    if engine is not None:
        if engine["method"] == "full":
            cfg = {k: v for k, v in cfg.items() if not k.startswith("lora_")}
        cfg["engine"] = {"compile": not smoke, **engine}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_one(name: str, cmd: list[str], out: Path, timeout_s: float, finish: bool, extra_env: dict | None = None) -> dict:
    """One process from launch; stopped (its whole process group) a few seconds after its performance report
    unless `finish`. Returns the report's figures and the per-step losses."""
    print(f"=== {name}: {' '.join(cmd)} (timeout {timeout_s:.0f} s)", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", JSONARGPARSE_DEPRECATION_WARNINGS="off", **(extra_env or {}))
    t0, stopped, reported = time.perf_counter(), False, None
    with open(out / "stdout.txt", "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while proc.poll() is None:
            time.sleep(1)
            elapsed = time.perf_counter() - t0
            if reported is None and "| - Tok/sec" in (out / "stdout.txt").read_text(errors="replace"):
                reported = elapsed
            if (not finish and reported is not None and elapsed > reported + 3) or elapsed > timeout_s:
                stopped = True
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    text = (out / "stdout.txt").read_text(errors="replace")
    shown = (line for line in text.splitlines() if "arn" not in line[:60] and not line.startswith("transformer."))
    print("\n".join(shown)[-2500:], flush=True)
    result = {"run": name, "exit": "stopped after report" if stopped and reported else proc.returncode,
              "wall_s": round(time.perf_counter() - t0, 1), "losses": step_losses(out / "out")}
    for key, pattern in REPORT.items():
        found = re.findall(pattern, text)
        if found:
            result[key] = float(found[-1].replace(",", ""))
    result["step_ms"] = step_times_ms(text)
    if "training_time_s" not in result and result["step_ms"]:
        # stock stopped before its report (the deadline): its own per-iteration clock, every step complete
        result["training_time_s"], result["clock"] = round(sum(result["step_ms"]) / 1e3, 3), "iteration log"
    if finish:
        final = out / "out/final"
        result["final_files"] = sorted(p.name for p in final.iterdir()) if final.is_dir() else []
        print(f"{name} final/: {result['final_files']}", flush=True)
    shutil.rmtree(out / "out/final", ignore_errors=True)  # 16 GB of random weights
    return result


def step_times_ms(text: str) -> list[float]:
    """Each optimizer step's time: the engine logs one line per step, stock one per micro batch (iteration) with
    "(step)" on the step's last, so a step is the sum of its iterations. Lines after the last "(step)" belong to a
    step that did not finish and are left out."""
    steps, running = [], 0.0
    for ms, marked in re.findall(r"iter time: ([\d.]+) ms( \(step\))?", text):
        running += float(ms)
        if marked:
            steps.append(running)
            running = 0.0
    return steps


def step_losses(out_dir: Path) -> list[float]:
    """The logged losses in order. The engine logs one row per optimizer step (the step's loss), stock one per
    micro batch (a running mean over the step's micro batches); only engine runs are compared row by row."""
    found = sorted(out_dir.glob("logs/csv/version_*/metrics.csv"))
    if not found:
        return []
    with open(found[-1]) as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh) if r.get("loss")]


def row(r: dict, gpus: int, steps: int, peak: float | None, facts: dict, ref: dict) -> dict:
    t = r.get("training_time_s")
    steps = len(r["step_ms"]) if r.get("clock") else steps  # a stopped stock run: the steps it finished
    samples = steps * facts["gbs"]
    useful = r["tokens_with_prompt"] / t / gpus if t and r.get("tokens_with_prompt") else None
    mfu = None
    if useful and peak:
        weights = 6 if r["run"].startswith("fast-full") else 4
        flops = weights * facts["n_params"] + 12 * facts["n_layer"] * facts["n_embd"] * facts["mean_len"]
        mfu = round(100 * useful * flops / (peak * 1e12), 1)
    ratio = lambda a, b: round(a / b, 2) if a and b else None  # noqa: E731
    step_s = round(t / steps, 3) if t else None
    versus = {"fast-lora": "stock-lora", "fast-dora": "fast-lora", "fast-qlora": "fast-lora",
              "fast-full-float8": "fast-full", "fast-full-float8-auto": "fast-full-auto",
              "fast-full-float8-dynamic": "fast-full-auto"}.get(r["run"])
    other = ref.get(versus, {}).get("training_time_s")
    loss_diff = None
    if "float8" in r["run"] and r.get("losses") and ref.get(versus, {}).get("losses"):
        pairs = list(zip(r["losses"], ref[versus]["losses"]))
        loss_diff = round(100 * max(abs(a - b) / b for a, b in pairs), 2)
    steady, other_steady = (steady_step_s(x, facts["profile_step"]) for x in (r, ref.get(versus, {})))
    return {"run": r["run"], "exit": r["exit"], "samples_per_s": round(samples / t, 2) if t else None,
            "step_s": step_s, "step_time_vs": f"{ratio(t, other)} x {versus}" if versus and other and t else "",
            "steady_step_s": steady and round(steady, 3),
            "steady_vs": f"{ratio(steady, other_steady)} x {versus}" if versus and steady and other_steady else "",
            "useful_tok_s_gpu": round(useful) if useful else None, "mfu_pct": mfu,
            "peak_mem_gb": r.get("peak_memory_gb"), "trainable": int(r["trainable"]) if r.get("trainable") else None,
            "float8_loss_diff_pct": loss_diff, "last_loss": r["losses"][-1] if r.get("losses") else None,
            "clock": r.get("clock", "report"), "wall_s": r["wall_s"]}


def steady_step_s(r: dict, profile_step: int) -> float | None:
    """The median step time after the first (which carries the first all-gathers and allocations), leaving out
    the step --profile-step slowed down (the engine reads a step's loss one step late, so its first step's time
    is only the host's dispatch and the second absorbs the wait)."""
    times = [ms / 1e3 for i, ms in enumerate(r.get("step_ms") or [], 1) if i > 1 and i != profile_step]
    return statistics.median(times) if times else None


def table(results: dict, ckpt: Path, args, peak: float | None, tokens_mean: float) -> str:
    config = yaml.safe_load((ckpt / "model_config.yaml").read_text())
    n_params = next((int(r["trainable"] + r.get("frozen", 0)) for r in results.values()
                     if r.get("trainable") and r.get("frozen")), None)
    n_params = n_params or next((int(r["trainable"]) for r in results.values() if r.get("trainable")), 0)
    facts = {"n_layer": config["n_layer"], "n_embd": config["n_embd"], "mean_len": tokens_mean,
             "n_params": n_params, "gbs": GBS // 32 if args.cpu_smoke else GBS, "profile_step": args.profile_step}
    rows = [row(r, args.gpus, args.steps, peak, facts, results) for r in results.values()]
    smi = shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                                         capture_output=True, text=True).stdout.strip()
    device = smi.splitlines()[0] if smi else "cpu"
    cols = list(rows[0])
    lines = [f"{args.gpus} x {device}, measured bf16 peak {peak and round(peak)} TFLOP/s; {config.get('name')}"
             f"{' (tiny)' if args.cpu_smoke else ''} ({n_params:,} parameters), {args.steps} steps of "
             f"{facts['gbs']} samples, max_seq_length 512, LoRA r {LORA['lora_r']} on every block Linear", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kit", type=Path, default=REPO / ".bench-ref", help="a copy of the shared reference kit")
    ap.add_argument("--bench", type=Path, default=Path("/tmp/bench-lora"))
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps of 256 samples per run")
    ap.add_argument("--runs", default=",".join(r for r in RUNS if not r.endswith(("-auto", "-dynamic"))),
                    help="in this order, each while the deadline leaves time (the -auto pair and the -dynamic run "
                         "only when named)")
    ap.add_argument("--finish", default="", help="runs that also write their (merged) final checkpoint, e.g. fast-lora")
    ap.add_argument("--engine", default="{}", help="JSON of engine switches added to every engine run")
    ap.add_argument("--deadline-s", type=int, help="no run starts after this; default 500 (a device call), 3000 on CPU")
    ap.add_argument("--lora-dropout", type=float, default=LORA["lora_dropout"])
    ap.add_argument("--lr-warmup-steps", type=int, default=1,
                    help="1 by default; 25 (config_hub's full fine-tune) keeps a random model's loss from diverging "
                         "over a few steps, for the float8 loss comparison")
    ap.add_argument("--cpu-smoke", action="store_true", help="2-layer model, fp32, one CPU process, float8 skipped")
    ap.add_argument("--profile-step", type=int, default=0,
                    help="the engine prints this step's top CUDA kernels (its time then counts in the training time)")
    ap.add_argument("--profile-runs", default="", help="the engine runs that profile --profile-step, e.g. fast-full-float8")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    if args.cpu_smoke:
        args.gpus = 1
    args.deadline_s = args.deadline_s or (3000 if args.cpu_smoke else 500)
    LORA["lora_dropout"] = args.lora_dropout
    ckpt = kit_prep(args.kit, args.bench, args.cpu_smoke, args.steps * (GBS // 32 if args.cpu_smoke else GBS),
                    model="Llama-3.1-8B")
    peak = None
    if not args.cpu_smoke:
        peak = bf16_peak()
    print(f"measured bf16 matmul peak: {peak} TFLOP/s", flush=True)
    os.environ.update(TORCHINDUCTOR_CACHE_DIR=str(args.bench / "inductor-cache"),
                      PYTHONPATH=f"{REPO / 'src'}:{os.environ.get('PYTHONPATH', '')}")
    results = {}
    for name in args.runs.split(","):
        kind, engine = RUNS[name]
        left = args.deadline_s - (time.perf_counter() - t_start)
        if left < 45 or (args.cpu_smoke and engine and engine.get("float8")):
            print(f"=== {name}: skipped ({'no FP8 GPU' if args.cpu_smoke else f'{left:.0f} s left'})", flush=True)
            continue
        engine = {**engine, **json.loads(args.engine)} if engine is not None else None
        out = args.bench / name
        shutil.rmtree(out, ignore_errors=True)
        config = write_yaml(out / "run.yaml", ckpt, args.bench, args.gpus, args.cpu_smoke, copy.deepcopy(engine),
                            args.lr_warmup_steps)
        cmd = ([sys.executable, "-m", "llmhpc.train.fsdp2"] if kind == "fast"
               else [sys.executable, "-m", "litgpt", "finetune_lora"]) + ["--config", str(config)]
        profile = ({"LLMHPC_FSDP2_PROFILE_STEP": str(args.profile_step)}
                   if kind == "fast" and args.profile_step and name in args.profile_runs.split(",") else {})
        results[name] = run_one(name, cmd, out, left - 15, name in args.finish.split(","), profile)
    tokens = [r["tokens_with_prompt"] for r in results.values() if r.get("tokens_with_prompt")]
    mean_len = statistics.mean(tokens) / (args.steps * (GBS // 32 if args.cpu_smoke else GBS)) if tokens else 0
    text = table(results, ckpt, args, peak, mean_len) if results else "no run"
    (args.bench / "lora_vs_stock.md").write_text(text + "\n")
    (args.bench / "lora_vs_stock.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n" + text, flush=True)
    ok = all(r["exit"] in (0, "stopped after report") for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    sys.exit(main())
