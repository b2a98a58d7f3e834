#!/usr/bin/env bash
# The ISC25 example's whole pipeline on ONE GPU (config/examples/gpu-isc25.yaml with finetune.devices and
# evaluate.gpus 1), through the workflow as a user runs it, with no --retries: every job must succeed the first
# time. Prints the jobs that ran, any that failed, the pipeline's wall and the summary's stage walls.
#   bash bench/isc25_1gpu_pipeline.sh            # on a GPU machine, from the repository root (.whl/ carried)
set -uo pipefail
out="${OUT:-/tmp/gpu-run}"
mkdir -p "$out"
source bench/device_env.sh >/dev/null || exit 2
export PYTHONPATH=$PWD/src:$PYTHONPATH
cfg=/tmp/gpu-isc25-1gpu.yaml
python3 bench/bench_helpers.py isc25-1gpu-config "$cfg"
OUT="$out" PIPELINE_TIMEOUT_S="${PIPELINE_TIMEOUT_S:-420}" bash bench/run_gpu_pipeline.sh "$cfg" > "$out/pipeline.txt" 2>&1
rc=$?
log="$out/snakemake.log"
echo "jobs finished: $(grep -c 'Finished jobid' "$log"); errors: $(grep -c 'Error in rule' "$log"); $(grep 'steps (' "$log" | tail -1)"
grep -B2 -A12 'Error in rule' "$log" | head -60
tail -40 "$out/pipeline.txt"
python3 bench/bench_helpers.py pipeline-summary --metrics stage_wall_s training_time_s samples_per_s job_wall_s
exit $rc
