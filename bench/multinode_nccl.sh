#!/usr/bin/env bash
# The multi-node launch path over real NCCL on one host of 4 GPUs, in one call (docs/gpu-runs.md):
#   bash bench/multinode_nccl.sh            # 2x2 pernode, 2x2 mpirun, 1x4; OUT=... collects the logs; carry .whl, .bench-ref
#   SHAPES=2x2@mpirun bash bench/multinode_nccl.sh
# 2 "nodes" x 2 GPUs through the `pernode` launcher (or `mpirun` with @mpirun), then 1 node x 4 GPUs, same model
# (random Llama-2-7b shape), data (1024 Alpaca-shaped records) and settings (config_hub full.yaml, the fsdp2
# engine). The final checkpoints are counted, then deleted (no weights in $OUT).
set -uo pipefail
out="${OUT:-/tmp/multinode}"
mkdir -p "$out"
source bench/device_env.sh || exit 2
echo "mpirun: $(command -v mpirun || echo none); mpiexec: $(command -v mpiexec || echo none)"
command -v mpirun >/dev/null && mpirun --version 2>&1 | head -1
python3 -c "import mpi4py; from mpi4py import MPI; print('mpi4py', mpi4py.__version__, MPI.Get_library_version().splitlines()[0])" 2>&1 | tail -1
# the device runs as root; Open MPI refuses root without these (harmless elsewhere)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bench=/tmp/bench
[ -f "$bench/.ckpt_dir" ] || python3 .bench-ref/stock_litgpt_prep.py prep --bench "$bench" --model Llama-2-7b-hf \
  --accel cuda --dtype bf16 --num-samples 1024 --max-seq-length 512 --ckpt-file "$bench/.ckpt_dir" 2>&1 | tail -3 || exit 3
python3 bench/multinode_nccl.py --checkpoint "$(cat "$bench/.ckpt_dir")" --data "$bench/data" --out "$out" \
  --shapes "${SHAPES:-2x2,2x2@mpirun,1x4}" --options "${OPTIONS:-{\"compile\": false\}}"
rc=$?
grep -h "Init COMPLETE" "$out"/*/finetune.stdout | head -8
find "$out" -name '*.pth' -size +1M -delete
exit $rc
