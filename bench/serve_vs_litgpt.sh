#!/usr/bin/env bash
# The serving benchmark on one GPU machine without internet (docs/bench-serve.md), one call:
#
#   bash bench/serve_vs_litgpt.sh                         # Llama-2-7b shape, random weights, 1/4/16 clients
#   bash bench/serve_vs_litgpt.sh --checkpoint DIR        # a real LitGPT checkpoint
#
# The carried wheels (.whl/) must hold fastapi, starlette, uvicorn, litserve and what they need beside litgpt.
# Copies the table, the JSON and both servers' logs to $OUT when set.
set -uo pipefail
out="${OUT:-/tmp/bench-run}"
mkdir -p "$out"
source bench/device_env.sh || exit 2
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
timeout "${BENCH_TIMEOUT_S:-560}" python3 bench/serve_vs_litgpt.py --workdir /tmp/bench-serve "$@" 2>&1 | tee "$out/bench.log"
rc=${PIPESTATUS[0]}
cp results/bench/serve_vs_litgpt.md results/bench/serve_vs_litgpt.json /tmp/bench-serve/*.log "$out/" 2>/dev/null
exit $rc
