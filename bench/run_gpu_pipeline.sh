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
python3 bench/bench_helpers.py pipeline-summary
exit $rc
