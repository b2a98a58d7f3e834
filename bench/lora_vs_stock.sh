#!/usr/bin/env bash
# The LoRA-family benchmark on a GPU machine without internet (one device call, about 8 minutes on 2 x H100):
#
#   bash bench/lora_vs_stock.sh --gpus 2            # needs .bench-ref/ (a copy of ../shared/bench) and .whl/
#   bash bench/lora_vs_stock.sh --cpu-smoke         # the same path on a 2-layer model (no GPU, no wheels needed)
#
# Runs bench/lora_vs_stock.py (arguments passed on): stock `litgpt finetune_lora` against the fsdp2 engine's lora,
# dora and qlora, and the engine's full fine-tune in bf16 against float8, at Llama-3.1-8B shape with random
# weights made on the device. Copies the table, the per-run stdout and the log to $OUT when set.
set -uo pipefail
out="${OUT:-/tmp/bench-run}"
mkdir -p "$out"
if [[ " $* " != *" --cpu-smoke "* ]]; then
  source bench/device_env.sh || exit 2  # the carried wheels, torchao among them
  python3 -c "import torch, torchao; print('torch', torch.__version__, 'torchao', torchao.__version__)" 2>&1 | tail -1
fi
timeout "${BENCH_TIMEOUT_S:-570}" python3 bench/lora_vs_stock.py "$@" 2>&1 | tee "$out/bench.log"
rc=${PIPESTATUS[0]}
bench_dir=/tmp/bench-lora
cp "$bench_dir/lora_vs_stock.md" "$bench_dir/lora_vs_stock.json" "$out/" 2>/dev/null
tar czf "$out/runs.tar.gz" -C "$bench_dir" $(cd "$bench_dir" 2>/dev/null && ls -d */stdout.txt */run.yaml \
  */out/logs 2>/dev/null) 2>/dev/null
exit $rc
