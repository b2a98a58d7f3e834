#!/usr/bin/env bash
# The fine-tune benchmark on a GPU machine without internet (docs/bench-finetune.md):
#
#   bash bench/finetune_vs_stock.sh [--records 512] [--config config/examples/bench-llama2-7b.yaml]
#   bash bench/finetune_vs_stock.sh --engine-vs-stock --gpus 4   # fsdp2 engine vs stock on .bench-ref (the shared kit)
#
# Runs bench/finetune_vs_stock.py (arguments passed on) and copies the table, its sources (both sides'
# litgpt stdout and summaries; no weights) and the log to $OUT when set.
set -uo pipefail
out="${OUT:-/tmp/bench-run}"
mkdir -p "$out"
source bench/device_env.sh || exit 2
timeout "${BENCH_TIMEOUT_S:-560}" python3 bench/finetune_vs_stock.py "$@" 2>&1 | tee "$out/bench.log"
rc=${PIPESTATUS[0]}
cp results/bench/finetune_vs_stock.md results/bench/finetune_vs_stock.csv "$out/" 2>/dev/null
tar czf "$out/sources.tar.gz" results/bench/stock*/finetune.stdout results/bench/stock*/summary.json \
  results/bench/stock*/stock.yaml results/finetune/*/finetune.stdout results/finetune/*/summary.json \
  results/finetune/*/litgpt.yaml results/env/manifest.json results/logs 2>/dev/null
for run in /tmp/bench/*/stdout.txt; do  # the --engine-vs-stock runs' whole outputs
  [ -f "$run" ] && cp "$run" "$out/$(basename "$(dirname "$run")").stdout"
done
exit $rc
