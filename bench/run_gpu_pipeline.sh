#!/usr/bin/env bash
# The whole pipeline on a GPU machine without internet, as recorded in docs/gpu-runs.md:
#
#   bash bench/run_gpu_pipeline.sh config/examples/gpu-2x.yaml [TARGET ...]
#
# Packages the machine lacks travel as wheels in .whl/ (snakemake, litgpt and what they need; see
# docs/gpu-runs.md for the download command). Prints the summary table last; copies the run's small outputs
# (summaries, logs, LitGPT configs, stdout; no weights) to $OUT when set.
set -uo pipefail
config="${1:?usage: run_gpu_pipeline.sh CONFIG [TARGET ...]}"
shift
out="${OUT:-/tmp/gpu-run}"
mkdir -p "$out"
source bench/device_env.sh || exit 2
t0=$(date +%s)
timeout "${PIPELINE_TIMEOUT_S:-520}" python3 -m snakemake --configfile "$config" --cores all "$@" 2>&1 | tee "$out/snakemake.log"
rc=${PIPESTATUS[0]}
echo "pipeline exit $rc, wall $(( $(date +%s) - t0 )) s"
# files under 2 MB only: weights, adapters (*.pth.lora) and optimizer states would make it too large to come back
find results -type f -size -2M ! -path 'results/weights/*' ! -path 'results/checkpoints/*' -print0 \
  | tar czf "$out/results-small.tar.gz" --null -T - 2>/dev/null
[ -f results/summary.csv ] && cp results/summary.csv "$out/summary.csv"
python3 - <<'PY'
import pandas as pd
t = pd.read_csv("results/summary.csv")
keep = ["training_time_s", "stage_wall_s", "tokens_per_s_per_device", "peak_memory_gb", "mfu", "final_loss",
        "speedup_vs_baseline", "acc", "acc_norm", "items_per_s", "wall_s"]
t = t[t.metric.isin(keep)]
print(t.pivot_table(index=["stage", "metric"], columns="experiment", values="value", aggfunc="first").to_string())
PY
exit $rc
