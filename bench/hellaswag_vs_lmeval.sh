#!/usr/bin/env bash
# The fast HellaSwag scorer (python -m llmhpc.eval.run) against lm-evaluation-harness 0.4.13 (HF backend), same
# random-weight model, same 10,042 HellaSwag-shaped items, same machine, one call:
#
#   bash bench/hellaswag_vs_lmeval.sh 7b    # Llama-2-7b shape: lm-eval batch 16 (GPU 0) | lm-eval --batch_size auto
#                                           # (GPU 1, with --log_samples for per-item agreement) | ours on 1 GPU
#                                           # (GPU 2), concurrently; then ours data-parallel on 4 GPUs
#   bash bench/hellaswag_vs_lmeval.sh 7b1   # Llama-2-7b shape on ONE GPU, in turn: lm-eval batch 16 (--log_samples),
#                                           # ours with a cold compile cache, ours again (warm cache), ours eager
#                                           # (--compile false: the reference path), a kernel profile of ours;
#                                           # LMEVAL_AUTO=1 adds lm-eval --batch_size auto; QUICK=1 runs only
#                                           # lm-eval batch 16 and ours eager; AGREE=0 leaves out the per-item
#                                           # agreement run and the profile; FAST_RUNS (cold warm eager) picks
#                                           # our runs (float8 float8-warm: evaluate.float8, on FP8 GPUs)
#   bash bench/hellaswag_vs_lmeval.sh 30b   # LLaMA-30B shape, each GPU capped at MAX_GIB (32, a V100's memory):
#                                           # ours as 4 pipeline stages on LIMIT items and on all items; lm-eval
#                                           # parallelize=True (accelerate spreads the layers) on the same LIMIT items
#
# Needs (ignored, carried to the GPU machine): .whl/ (lm-eval's and litgpt's wheels, from ../shared/bench/lmeval/wheels
# and ../shared/bench/wheels) and .bench-ref/lmeval/ (the reference kit: data generator, tokenizer, lm-eval task,
# log timestamping and summary). Whole runs are timed from process start to results written, model load included.
# The peak bf16 matrix product is measured in the same call (MFU = 2 x parameters x unique tokens / scoring time /
# peak; unique tokens = each context once plus every ending).
# Env: OUT (/tmp/hsbench), HS (/tmp/hsb), N_ITEMS (10042), LIMIT (30b subset, 1000), SAMPLES (7b1: lm-eval's
#      per-item answers on this many items, 2000), MAX_GIB (32), BUDGET_S (560),
#      PYTHON (python3), SKIP_WHEELS (0), CPU_SMOKE (0: 1 = tiny model on CPU, to test this script)
set -uo pipefail
MODE="${1:-7b}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
OUT="${OUT:-/tmp/hsbench}"
HS="${HS:-/tmp/hsb}"
KIT="$REPO/.bench-ref/lmeval"
N_ITEMS="${N_ITEMS:-10042}"
LIMIT="${LIMIT:-1000}"
SAMPLES="${SAMPLES:-2000}"
MAX_GIB="${MAX_GIB:-32}"
BUDGET_S="${BUDGET_S:-560}"
BENCH="$REPO/bench/hellaswag_vs_lmeval.py"
export KIT PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=true
T_START=$(date +%s.%N)
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
left() { awk -v s="$T_START" -v b="$BUDGET_S" -v n="$(now)" 'BEGIN { x = int(s + b - n); print (x < 30 ? 30 : x) }'; }
mkdir -p "$OUT" "$HS"

SITE=/tmp/hsb_site
if [ "${SKIP_WHEELS:-0}" != "1" ] && [ -f "$SITE/.done" ]; then
  export PYTHONPATH="$SITE:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"   # same machine, earlier call: reuse
elif [ "${SKIP_WHEELS:-0}" != "1" ]; then
  rm -rf "$SITE"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --target "$SITE" \
    "$REPO"/.whl/*.whl || { echo "FATAL: wheels"; exit 2; }
  $PY -c "import requests" 2>/dev/null || $PY -m pip install -q --no-index --no-deps --target "$SITE" "$REPO"/.whl/fallback/*.whl
  touch "$SITE/.done"
  export PYTHONPATH="$SITE:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "=== $(date -u +%FT%TZ) mode=$MODE wheels in $(since "$T_START") s; $(nproc) cpus"
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader 2>/dev/null

# ---- items, tokenizer (the kit's generator: HellaSwag's length distribution; BPE 32000 that prepends BOS) ----
t=$(now)
if [ "$(cat "$HS/.items" 2>/dev/null)" = "$N_ITEMS" ] && [ -f "$HS/tok/tokenizer.json" ]; then
  echo "(items and tokenizer of an earlier call on this machine reused)"
else
  $PY "$KIT/hs_prep.py" data --out-dir "$HS" --n "$N_ITEMS" >/dev/null && \
    $PY "$KIT/hs_prep.py" tokenizer --corpus "$HS/corpus.txt" --out "$HS/tok" | tail -1 || { echo "FATAL: prep"; exit 3; }
  echo "$N_ITEMS" > "$HS/.items"
fi
mkdir -p "$HS/task" && cp "$KIT/task/utils.py" "$HS/task/" && \
  sed "s#HS_DATA_FILE#$HS/hellaswag_val.jsonl#" "$KIT/task/hellaswag_synth.yaml" > "$HS/task/hellaswag_synth.yaml"
echo "=== items + tokenizer in $(since "$t") s"

run_lmeval() {  # label gpus batch_size model_args extra...
  local label=$1 gpus=$2 bs=$3 margs=$4; shift 4
  local t0 rc wall
  rm -rf "$OUT/lm_$label"
  t0=$(now)
  CUDA_VISIBLE_DEVICES=$gpus HF_HOME="$HS/hf_$label" timeout --kill-after=10 "$(left)" \
    $PY -m lm_eval --model hf --model_args "$margs" --tasks hellaswag_synth --include_path "$HS/task" \
    --batch_size "$bs" --output_path "$OUT/lm_$label" "$@" 2>&1 | $PY "$KIT/hs_prep.py" tsfilter --t0 "$t0" \
    > "$OUT/lm_$label.log"
  rc=${PIPESTATUS[0]}
  wall=$(since "$t0")
  $PY "$KIT/hs_prep.py" summary --log "$OUT/lm_$label.log" --out-path "$OUT/lm_$label" --task hellaswag_synth \
    --items "${LM_LIMIT:-$N_ITEMS}" --limit "${LM_LIMIT:-}" --batch-size "$bs" --rc "$rc" --wall "$wall" \
    --gpu "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" --model-label "$MODE" \
    --dtype bfloat16 > "$OUT/lm_$label.summary" 2>&1
  echo "--- lm-eval $label (rc $rc, ${wall} s): $(tail -1 "$OUT/lm_$label.summary" | cut -c1-600)"
}

run_fast() {  # label gpus nproc checkpoint extra...
  local label=$1 gpus=$2 nproc=$3 ckpt=$4; shift 4
  local t0 launcher=($PY -m llmhpc.eval.run)
  [ "$nproc" -gt 1 ] && launcher=($PY -m torch.distributed.run --standalone --nproc_per_node "$nproc" -m llmhpc.eval.run)
  rm -f "$OUT/fast_$label".*
  t0=$(now)
  CUDA_VISIBLE_DEVICES=$gpus timeout --kill-after=10 "$(left)" "${launcher[@]}" --checkpoint "$ckpt" \
    --eval-file "$HS/hellaswag_val.jsonl" --predictions "$OUT/fast_$label.jsonl" --metrics "$OUT/fast_$label.json" \
    --peak-tflops "$PEAK" ${FAST_DEV[@]+"${FAST_DEV[@]}"} "$@" > "$OUT/fast_$label.log" 2>&1
  echo "$?" > "$OUT/fast_$label.json.rc"
  since "$t0" > "$OUT/fast_$label.json.wall"
  echo "--- ours $label (rc $(cat "$OUT/fast_$label.json.rc"), $(cat "$OUT/fast_$label.json.wall") s): $(grep -v Warning "$OUT/fast_$label.log" | tail -2 | cut -c1-400)"
  $PY "$BENCH" phases "$OUT/fast_$label.json" 2>/dev/null
}

SHAPE=$MODE; DEV=cuda:0; FAST_DEV=(); PEAK=0; NGPU=4
NGPU_HAVE=$(nvidia-smi -L 2>/dev/null | grep -c GPU || true); [ "${NGPU_HAVE:-0}" -ge 1 ] || NGPU_HAVE=1
if [ "${CPU_SMOKE:-0}" = "1" ]; then
  SHAPE=tiny; DEV=cpu; FAST_DEV=(--device cpu); NGPU=2
else
  PEAK=$(CUDA_VISIBLE_DEVICES=$((NGPU_HAVE - 1)) $PY "$BENCH" peak | tee /dev/stderr | sed -n 's/.*tflops=\([0-9.]*\).*/\1/p')
fi
echo "=== peak ${PEAK} TFLOP/s"

if [ "$MODE" = "7b1" ]; then
  t=$(now)
  CUDA_VISIBLE_DEVICES=0 $PY "$BENCH" build --shape "${SHAPE/7b1/7b}" --hf-out "$HS/model" --tokenizer "$HS/tok" \
    || { echo "FATAL: build"; exit 4; }
  echo "=== model written in $(since "$t") s"
  run_lmeval b16 0 16 "pretrained=$HS/model,dtype=bfloat16" --device "$DEV"
  [ "${LMEVAL_AUTO:-0}" = "1" ] && run_lmeval auto 0 auto "pretrained=$HS/model,dtype=bfloat16" --device "$DEV"
  export TORCHINDUCTOR_CACHE_DIR="$HS/inductor-cache" TRITON_CACHE_DIR="$HS/triton-cache"
  rm -rf "$TORCHINDUCTOR_CACHE_DIR" "$TRITON_CACHE_DIR"
  if [ "${QUICK:-0}" = "1" ]; then  # lm-eval batch 16 and ours eager only: a short call
    run_fast eager 0 1 "$HS/model" --compile false
    $PY "$BENCH" table --baseline lmeval-b16 "lmeval-b16:lmeval:$OUT/lm_b16.summary" "ours-eager:fast:$OUT/fast_eager.json"
    exit 0
  fi
  RUNS="${FAST_RUNS:-cold warm eager}"
  case " $RUNS " in *" cold "*) run_fast cold 0 1 "$HS/model" ;; esac
  case " $RUNS " in *" warm "*) run_fast warm 0 1 "$HS/model" ;; esac
  case " $RUNS " in *" eager "*) run_fast eager 0 1 "$HS/model" --compile false ;; esac
  # evaluate.float8 (FP8 tensor cores): its first run compiles its own graphs, the second finds them cached
  case " $RUNS " in *" float8 "*) run_fast float8 0 1 "$HS/model" --float8 ;; esac
  case " $RUNS " in *" float8-warm "*) run_fast float8-warm 0 1 "$HS/model" --float8 ;; esac
  for r in float8 float8-warm; do  # float8's answers item by item against bf16's (the first bf16 run of the call)
    bf16=$(for b in cold warm eager; do [ -f "$OUT/fast_$b.jsonl" ] && echo "$OUT/fast_$b.jsonl" && break; done)
    [ -f "$OUT/fast_$r.jsonl" ] && [ -n "$bf16" ] && { echo -n "$r vs $(basename "$bf16"): "
      $PY -m llmhpc.eval.guard --predictions "$OUT/fast_$r.jsonl" --reference-predictions "$bf16" | tr -d '\n' | cut -c1-300; echo; }
  done
  # lm-eval's per-item answers (--log_samples) on the first SAMPLES items: agreement, outside the timed runs
  [ "${AGREE:-1}" = "1" ] && {
  LM_LIMIT=$SAMPLES run_lmeval samples 0 16 "pretrained=$HS/model,dtype=bfloat16" --device "$DEV" --limit "$SAMPLES" \
    --log_samples
  $PY "$BENCH" agree --label "lm-eval b16 vs ours compiled" --lmeval-out "$OUT/lm_samples" --predictions "$OUT/fast_warm.jsonl"
  $PY "$BENCH" agree --label "lm-eval b16 vs ours eager" --lmeval-out "$OUT/lm_samples" --predictions "$OUT/fast_eager.jsonl"
  $PY -m llmhpc.eval.guard --predictions "$OUT/fast_warm.jsonl" --reference-predictions "$OUT/fast_eager.jsonl" \
    | tr -d '\n' | cut -c1-300; echo
  $PY "$BENCH" compile "cold:$OUT/fast_cold.json" "warm:$OUT/fast_warm.json" 2>/dev/null
  [ "$DEV" != cpu ] && CUDA_VISIBLE_DEVICES=0 timeout "$(left)" $PY "$BENCH" profile --checkpoint "$HS/model" \
    --eval-file "$HS/hellaswag_val.jsonl" > "$OUT/profile_7b.txt" 2>&1; grep -A 24 PROFILE "$OUT/profile_7b.txt" | cut -c1-180
  }
  echo "=== total $(since "$T_START") s"
  rows=(); for r in $RUNS; do rows+=("ours-$r:fast:$OUT/fast_$r.json"); done
  $PY "$BENCH" table --baseline lmeval-b16 "lmeval-b16:lmeval:$OUT/lm_b16.summary" \
    $([ "${LMEVAL_AUTO:-0}" = 1 ] && echo "lmeval-auto:lmeval:$OUT/lm_auto.summary") "${rows[@]}"
elif [ "$MODE" = "7b" ]; then
  t=$(now)
  CUDA_VISIBLE_DEVICES=0 $PY "$BENCH" build --shape "$SHAPE" --hf-out "$HS/model" --tokenizer "$HS/tok" \
    || { echo "FATAL: build"; exit 4; }
  echo "=== model written in $(since "$t") s"
  run_lmeval b16 0 16 "pretrained=$HS/model,dtype=bfloat16" --device "$DEV" &
  run_lmeval auto 1 auto "pretrained=$HS/model,dtype=bfloat16" --device "$DEV" --log_samples &
  run_fast 1gpu 2 1 "$HS/model" &
  [ "$DEV" != cpu ] && CUDA_VISIBLE_DEVICES=3 timeout 150 $PY "$BENCH" profile --checkpoint "$HS/model" \
    --eval-file "$HS/hellaswag_val.jsonl" > "$OUT/profile_7b.txt" 2>&1 &
  wait
  grep -A 24 PROFILE "$OUT/profile_7b.txt" | cut -c1-180
  run_fast 4gpu 0,1,2,3 "$NGPU" "$HS/model"
  $PY "$BENCH" agree --label "lm-eval auto vs ours 1 GPU" --lmeval-out "$OUT/lm_auto" --predictions "$OUT/fast_1gpu.jsonl"
  $PY -m llmhpc.eval.guard --predictions "$OUT/fast_4gpu.jsonl" --reference-predictions "$OUT/fast_1gpu.jsonl" \
    | tr -d '\n' | cut -c1-300; echo
  echo "=== total $(since "$T_START") s"
  $PY "$BENCH" table --baseline lmeval-b16 "lmeval-b16:lmeval:$OUT/lm_b16.summary" \
    "lmeval-auto(+log_samples):lmeval:$OUT/lm_auto.summary" "ours-1gpu:fast:$OUT/fast_1gpu.json" \
    "ours-4gpu-dp:fast:$OUT/fast_4gpu.json"
else
  t=$(now)
  CUDA_VISIBLE_DEVICES=0 $PY "$BENCH" build --shape "${SHAPE/7b/30b}" --hf-out "$HS/model30" --tokenizer "$HS/tok" \
    || { echo "FATAL: build"; exit 4; }
  echo "=== model written in $(since "$t") s"
  run_fast pp4-subset 0,1,2,3 "$NGPU" "$HS/model30" --pipeline-stages "$NGPU" --max-memory-gib "$MAX_GIB" --limit "$LIMIT" \
    --token-budget 8192
  run_fast pp4-full 0,1,2,3 "$NGPU" "$HS/model30" --pipeline-stages "$NGPU" --max-memory-gib "$MAX_GIB" --token-budget 8192
  LM_LIMIT=$LIMIT run_lmeval par 0,1,2,3 16 \
    "pretrained=$HS/model30,dtype=bfloat16,parallelize=True,max_memory_per_gpu=${MAX_GIB}GB" --limit "$LIMIT" --log_samples
  $PY "$BENCH" agree --label "lm-eval parallelize vs ours pp4" --lmeval-out "$OUT/lm_par" --predictions "$OUT/fast_pp4-subset.jsonl"
  echo "=== 30b part done at $(since "$T_START") s"
  $PY "$BENCH" table --baseline lmeval-parallelize "lmeval-parallelize:lmeval:$OUT/lm_par.summary" \
    "ours-pp4-subset:fast:$OUT/fast_pp4-subset.json" "ours-pp4-all-items:fast:$OUT/fast_pp4-full.json"
  if [ "${WITH_7B:-0}" = "1" ]; then  # the 7B runs of ours again (lm-eval's 7B figures: the 7b mode's call)
    rm -rf "$HS/model30"
    CUDA_VISIBLE_DEVICES=0 $PY "$BENCH" build --shape "${SHAPE/30b/7b}" --hf-out "$HS/model" --tokenizer "$HS/tok" | tail -1
    run_fast 1gpu 0 1 "$HS/model"
    run_fast 4gpu 0,1,2,3 "$NGPU" "$HS/model"
    $PY "$BENCH" table --baseline ours-1gpu "ours-1gpu:fast:$OUT/fast_1gpu.json" "ours-4gpu-dp:fast:$OUT/fast_4gpu.json"
  fi
  echo "=== total $(since "$T_START") s"
fi
