#!/usr/bin/env python3
"""The small Python steps of bench's shell scripts, run from the repository root:

  pipeline-summary     the workflow's results/summary.csv pivoted to (stage, metric) x experiment, for the metrics
                       named (bench/run_gpu_pipeline.sh, bench/isc25_1gpu_pipeline.sh)
  isc25-1gpu-config    config/examples/gpu-isc25.yaml on one GPU (finetune.devices and evaluate.gpus 1), written to
                       OUT (bench/isc25_1gpu_pipeline.sh)
  stress-lines         one line per run (exit, wall, stage wall, phases) from bench/exit_stress.py's JSON lines on
                       stdin (bench/job_stress.sh)
"""

from __future__ import annotations

import argparse
import json
import sys

PIPELINE_METRICS = ["training_time_s", "stage_wall_s", "tokens_per_s_per_device", "peak_memory_gb", "mfu",
                    "final_loss", "speedup_vs_baseline", "acc", "acc_norm", "items_per_s", "wall_s"]


def cmd_pipeline_summary(a) -> None:
    import pandas as pd

    t = pd.read_csv(a.csv)
    t = t[t.metric.isin(a.metrics)]
    print(t.pivot_table(index=["stage", "metric"], columns="experiment", values="value", aggfunc="first").to_string())


def cmd_isc25_1gpu_config(a) -> None:
    import yaml

    with open(a.source) as fh:
        c = yaml.safe_load(fh)
    c["run_name"] = "gpu-isc25-1gpu"
    c["finetune"]["devices"] = 1
    c["evaluate"]["gpus"] = 1
    c["presentation"]["title"] = "The ISC25 LoRA family on 1 GPU (SmolLM2-135M shape, random weights)"
    with open(a.out, "w") as fh:
        yaml.safe_dump(c, fh, sort_keys=False)


def cmd_stress_lines(a) -> None:
    for line in sys.stdin:
        r = json.loads(line)
        p = r.get("phases")
        print(r["rc"], r["wall_s"], r.get("stage_wall_s"), json.dumps(p)[:400] if p else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pipeline-summary")
    p.add_argument("--csv", default="results/summary.csv")
    p.add_argument("--metrics", nargs="+", default=PIPELINE_METRICS, help="rows kept (default: %(default)s)")
    p = sub.add_parser("isc25-1gpu-config")
    p.add_argument("out")
    p.add_argument("--source", default="config/examples/gpu-isc25.yaml")
    sub.add_parser("stress-lines")
    a = ap.parse_args()
    {"pipeline-summary": cmd_pipeline_summary, "isc25-1gpu-config": cmd_isc25_1gpu_config,
     "stress-lines": cmd_stress_lines}[a.cmd](a)


if __name__ == "__main__":
    main()
