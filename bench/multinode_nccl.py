"""The fine-tune through the workflow's own launch path over real NCCL, on one host with several GPUs:

    python bench/multinode_nccl.py --checkpoint DIR --data DIR [--engine fsdp2|litgpt] [--shapes 2x2,2x2@mpirun,1x4]

Each shape NODESxGPUS runs what the finetune rule's script runs (llmhpc.cluster.launch.plan, then
llmhpc.stages.finetune.run_stage): with 2 or more nodes the `pernode` launcher starts one torchrun per "node",
node ranks 0..N-1 on disjoint GPUs of this host (site.nodes_on_one_host), exactly as it starts them over the
node file on a cluster; `@mpirun` starts every rank with mpirun (all on this host, grouped into nodes by rank);
with one node the engine starts its own processes. NCCL_DEBUG=INFO puts every rank's
NCCL set-up into the stdout. Prints, per shape: NCCL communicators set up per rank, world size, exit, number of
final checkpoints written, training time, stage wall, tokens/s per GPU, MFU, peak memory; and the cost of the
node split as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from llmhpc.cluster import launch  # noqa: E402
from llmhpc.snakefile_helpers import export_pythonpath  # noqa: E402
from llmhpc.stages.finetune import run_stage  # noqa: E402
from llmhpc.train.litgpt import write_litgpt_config  # noqa: E402

# config_hub finetune/llama-2-7b/full.yaml, the APAC task's max_seq_length and epoch, no intermediate validation
SETTINGS = {
    "method": "full", "precision": "bf16-true", "global_batch_size": 64, "micro_batch_size": 4, "epochs": 1,
    "max_steps": None, "max_seq_length": 512, "learning_rate": 2e-4, "min_lr": 6e-5, "weight_decay": 0.0,
    "lr_warmup_steps": 25, "seed": 1337, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
    "lora_targets": ["query", "value"], "betas": [0.9, 0.95], "max_norm": None, "log_interval": 1,
    "save_interval": 1_000_000, "eval_interval": 1_000_000, "eval_max_iters": 2, "eval_max_new_tokens": 1,
    "initial_validation": False, "final_validation": False, "prompt_style": "alpaca", "mask_prompt": False,
    "ignore_index": -100, "data_seed": 42, "data_num_workers": 2, "launch_env": {}, "extra": {},
}


def run_shape(shape: str, engine: str, options: dict, checkpoint: Path, data: Path, out: Path) -> dict:
    """shape: NODESxGPUS, with @mpirun for the mpirun launcher (default: pernode on several nodes, local on one)."""
    name, _, launcher = shape.partition("@")
    nodes, gpus = map(int, name.split("x"))
    launcher = launcher or ("pernode" if nodes > 1 else "local")
    name = f"{name}-{launcher}"
    ft = {**SETTINGS, "devices": gpus, "num_nodes": nodes, "engine": engine, "engine_options": options}
    # --bind-to none as in the Gadi and Aspire 2A site files (OpenMPI would pin each rank to one core)
    site = {"name": "one-host", "scheduler": "local", "launcher": launcher, "mpirun_args": ["--bind-to", "none"],
            "nodes_on_one_host": True, "gpus_per_node": gpus, "env": {"NCCL_DEBUG": "INFO"}}
    work = out / name
    work.mkdir(parents=True, exist_ok=True)
    config = work / "litgpt.yaml"
    write_litgpt_config(config, ft, checkpoint, data, work / "out", name)
    plan = launch.plan(site, ft)
    os.environ.update(plan["env"])
    t0 = time.time()
    try:
        summary = run_stage(config, checkpoint, work / "out", work / "finetune.stdout", work / "metrics.csv",
                            work / "summary.json", ft, peak_override=None, threads=8, launch=plan)
        code = 0
    except RuntimeError as exc:
        print(exc)
        summary, code = {}, 1
    text = (work / "finetune.stdout").read_text(errors="replace") if (work / "finetune.stdout").exists() else ""
    # one "Init COMPLETE" per rank and communicator; the ranks that said it, by their global rank
    ranks = sorted({int(m) for m in re.findall(r"comm 0x[0-9a-f]+ rank (\d+) nranks \d+ .*Init COMPLETE", text)})
    nranks = sorted({int(m) for m in re.findall(r"rank \d+ nranks (\d+) .*Init COMPLETE", text)})
    finals = list((work / "out").rglob("lit_model.pth"))
    return {"shape": name, "launcher": plan["launcher"], "exit": code, "nccl_ranks_ready": ranks,
            "nranks": nranks, "final_checkpoints": len(finals), "wall_s": round(time.time() - t0, 1),
            **{k: summary.get(k) for k in ("training_time_s", "stage_wall_s", "tokens_per_s_per_device", "mfu",
                                           "peak_memory_gb", "world_size", "final_loss")}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/multinode")))
    ap.add_argument("--engine", default="fsdp2", choices=["fsdp2", "litgpt"])
    ap.add_argument("--shapes", default="2x2,1x4", help="NODESxGPUS[@mpirun|@pernode], comma-separated")
    ap.add_argument("--options", default="{}", help="engine_options as JSON")
    args = ap.parse_args()
    export_pythonpath(REPO / "src")  # as the workflow does: the launched processes import this package
    rows = []
    for shape in args.shapes.split(","):
        rows.append(run_shape(shape, args.engine, json.loads(args.options), args.checkpoint, args.data, args.out))
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "multinode.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\n{'shape':<13}{'launcher':<10}{'exit':>5}{'NCCL ranks':>12}{'ckpts':>6}{'train s':>9}{'wall s':>8}"
          f"{'tok/s/GPU':>11}{'MFU':>7}{'mem GB':>8}")
    for r in rows:
        print(f"{r['shape']:<13}{r['launcher']:<10}{r['exit']:>5}{len(r['nccl_ranks_ready']):>12}"
              f"{r['final_checkpoints']:>6}{r['training_time_s'] or 0:>9.1f}{r['stage_wall_s'] or 0:>8.1f}"
              f"{r['tokens_per_s_per_device'] or 0:>11.0f}{r['mfu'] or 0:>7.3f}{r['peak_memory_gb'] or 0:>8.1f}")
    split, one = (rows + [None, None])[:2]
    if split and one and split.get("training_time_s") and one.get("training_time_s"):
        print(f"node split cost: {split['shape']} trains in {split['training_time_s'] / one['training_time_s']:.2f}x"
              f" the time of {one['shape']}")
    return max(r["exit"] for r in rows)


if __name__ == "__main__":
    sys.exit(main())
