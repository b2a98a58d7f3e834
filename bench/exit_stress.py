"""Run a GPU job's process many times in a row and count the ones that die, as a user's evaluate or fine-tune
stage would run it; each run under faulthandler, so a crash leaves the Python stack of every thread.

    python bench/exit_stress.py prepare DIR                     # SmolLM2-135M-shape random model + the 192 items
    python bench/exit_stress.py evaluate DIR --runs 20          # the evaluate stage's in-process fast scorer
    python bench/exit_stress.py finetune DIR --runs 20          # the fsdp2 engine (LoRA), as the stage starts it
    python bench/exit_stress.py imports                         # each entry's import time above `import torch`

Prints one line per run (exit code, the job's wall, the scorer's or engine's own phases) and a table last;
a failed run's stderr tail goes to DIR/crash-<what>-<n>.txt. --device cpu --shape pythia-14m tries it on a laptop.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

ENTRIES = {"fast scorer": "llmhpc.eval.run", "fsdp2 engine": "llmhpc.train.fsdp2.engine",
           "server": "llmhpc.serve.cli", "evaluate stage": "llmhpc.stages.evaluate"}
HEAVY = ("lightning", "torchmetrics", "transformers")


def cmd_prepare(a) -> None:
    from llmhpc.sources import embedded
    from llmhpc.sources.tiny import write_tiny_model
    from llmhpc.stages.convert import convert

    d = Path(a.dir)
    d.mkdir(parents=True, exist_ok=True)
    write_tiny_model(d / "hf", a.shape, vocab_size=a.vocab, seed=0, dtype="bfloat16" if a.device == "cuda" else "float32")
    convert(d / "hf", d / "ckpt", a.shape)
    embedded.write(d / "data")
    (d / "hellaswag.jsonl").write_bytes((d / "data" / "hellaswag.jsonl").read_bytes())
    print(f"prepared {d}: {a.shape}, {sum(1 for _ in open(d / 'hellaswag.jsonl'))} items")


def run_one(cmd: list[str], what: str, n: int, d: Path, env: dict) -> dict:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        (d / f"crash-{what}-{n}.txt").write_text(f"rc {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-20000:]}")
    return {"rc": proc.returncode, "wall_s": round(wall, 2), "output": proc.stdout + proc.stderr}


def cmd_job_evaluate(a) -> None:
    """One evaluate job as workflow/scripts/evaluate.py runs it: this process scores, then ends the way the
    interpreter ends a rule script (no os._exit of ours; the heap frozen at exit, as rulelog.to_log arranges)."""
    import torch

    from llmhpc import cuda_start, process_exit

    process_exit.skip_final_collection()

    if a.device != "cpu":
        cuda_start.begin()  # as workflow/scripts/evaluate.py does for a one-process scorer

    from llmhpc.cluster import launch
    from llmhpc.stages import evaluate

    d = Path(a.dir)
    torch.set_num_threads(4)
    os.environ.update(launch.compile_cache_env({}, {}, os.environ))
    out = d / f"eval-{a.n}"
    settings = {"scorer": "fast", "device": a.device, "precision": "auto", "compile": a.compile}
    evaluate.run_stage(settings, d / "ckpt", d / "hellaswag.jsonl",
                       out / "predictions.jsonl", out / "metrics.json")


def cmd_evaluate(a) -> None:
    d = Path(a.dir)
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    rows = []
    for n in range(a.runs):
        r = run_one([sys.executable, __file__, "job-evaluate", str(d), str(n), "--device", a.device, "--compile", a.compile],
                    "evaluate", n, d, env)
        m = d / f"eval-{n}" / "metrics.json"
        metrics = json.loads(m.read_text()) if m.is_file() else {}
        r.update(written=m.is_file(), scorer_wall_s=metrics.get("wall_s"), stage_wall_s=metrics.get("stage_wall_s"),
                 phases=metrics.get("phases_s"), compile=metrics.get("compile"))
        print(json.dumps({k: v for k, v in r.items() if k != "output"}), flush=True)
        rows.append(r)
    table("evaluate", rows)


def finetune_yaml(d: Path, n: int, method: str, steps: int, device: str) -> Path:
    from llmhpc.train.litgpt import write_litgpt_config

    settings = {"method": method, "engine": "fsdp2", "precision": "bf16-true" if device == "cuda" else "32-true",
                "devices": 1, "num_nodes": 1, "global_batch_size": 16, "micro_batch_size": 4, "epochs": 1,
                "max_steps": steps, "max_seq_length": 512, "learning_rate": 2e-4, "min_lr": 6e-5, "weight_decay": 0.0,
                "lr_warmup_steps": 1, "seed": 1337, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
                "lora_targets": ["query", "value"], "final_validation": False, "save_interval": 1000,
                "eval_interval": 1000, "log_interval": 1, "data_num_workers": 0}
    path = d / f"ft-{n}" / "litgpt.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    from llmhpc.settings import FinetuneSettings

    defaults = FinetuneSettings.from_dict({})
    full = {f: getattr(defaults, f) for f in FinetuneSettings.__dataclass_fields__}
    full = {k: (list(v) if isinstance(v, tuple) else v) for k, v in full.items()}
    full.update(settings)
    write_litgpt_config(path, full, checkpoint_dir=str(d / "ckpt"), data_dir=str(d / "data"),
                        out_dir=str(d / f"ft-{n}" / "out"), experiment=f"ft-{n}")
    return path


def cmd_finetune(a) -> None:
    d = Path(a.dir)
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    rows = []
    for n in range(a.runs):
        cfg = finetune_yaml(d, n, a.method, a.steps, a.device)
        r = run_one([sys.executable, "-m", "llmhpc.train.fsdp2", "--config", str(cfg)], "finetune", n, d, env)
        final = d / f"ft-{n}" / "out" / "final"
        # the engine prints its phases on stdout (print_main)
        r.update(written=final.is_dir(), phases=[ln for ln in r["output"].splitlines() if ln.startswith(
            ("Launch to", "Model built", "Start-up to training", "Samples per second", "Saved", "Engine phases",
             "Compile decision"))])
        print(json.dumps({k: v for k, v in r.items() if k != "output"}), flush=True)
        rows.append(r)
    table("finetune", rows)


def cmd_imports(a) -> None:
    """Each entry module's import time above `import torch` and the heavy packages it loaded, in a fresh process."""
    for label, module in ENTRIES.items():
        times = []
        for _ in range(a.repeat):
            out = subprocess.run([sys.executable, __file__, "job-import", module], capture_output=True, text=True)
            if out.returncode:
                print(label, "failed:", out.stderr[-500:])
                break
            times.append(out.stdout.strip())
        print(f"{label:16} {module:28} {' | '.join(times)}")


def cmd_job_import(a) -> None:
    import importlib

    import torch  # noqa: F401 - the floor the entry's own imports are measured above

    t = time.perf_counter()
    importlib.import_module(a.module)
    print(round(time.perf_counter() - t, 3), [m for m in HEAVY if m in sys.modules])


def table(what: str, rows: list[dict]) -> None:
    bad = [i for i, r in enumerate(rows) if r["rc"] != 0]
    walls = sorted(r["wall_s"] for r in rows)
    print(f"\n| {what} runs | failed | exit codes of failures | job wall median (min-max) s |")
    print("|---|---|---|---|")
    print(f"| {len(rows)} | {len(bad)} | {sorted({rows[i]['rc'] for i in bad})} | "
          f"{walls[len(walls) // 2]:.2f} ({walls[0]:.2f}-{walls[-1]:.2f}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("dir")
    p.add_argument("--shape", default="SmolLM2-135M")
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--device", default="cuda")
    for name in ("evaluate", "finetune"):
        p = sub.add_parser(name)
        p.add_argument("dir")
        p.add_argument("--runs", type=int, default=20)
        p.add_argument("--device", default="cuda")
        if name == "evaluate":
            p.add_argument("--compile", default="auto", help="evaluate.compile: auto, true (the warm-up thread), false")
        if name == "finetune":
            p.add_argument("--method", default="lora")
            p.add_argument("--steps", type=int, default=4)
    p = sub.add_parser("imports")
    p.add_argument("--repeat", type=int, default=3)
    p = sub.add_parser("job-evaluate")
    p.add_argument("dir")
    p.add_argument("n")
    p.add_argument("--device", default="cuda")
    p.add_argument("--compile", default="auto")
    sub.add_parser("job-import").add_argument("module")
    a = ap.parse_args()
    {"prepare": cmd_prepare, "evaluate": cmd_evaluate, "finetune": cmd_finetune, "imports": cmd_imports,
     "job-evaluate": cmd_job_evaluate, "job-import": cmd_job_import}[a.cmd](a)


if __name__ == "__main__":
    main()
