# The evaluate job and the fsdp2 engine run again and again as their stages run them (bench/exit_stress.py), plus
# each entry's import time, in one call on a GPU machine: EV=20 EVC=8 FT=20 bash bench/job_stress.sh
# Lines go to $OUT/stress.log; the crashes' stderr tails, the tables and one line per run (exit, wall, phases) print last.
source bench/device_env.sh >/dev/null; export PYTHONPATH=$PWD/src:$PYTHONPATH
B=bench/exit_stress.py; L=${OUT:-/tmp}/stress.log
python3 -c "import torch, litgpt.model, numpy, yaml" ; python3 -c "import torch._dynamo" # bytecode cache filled once
python3 $B prepare /tmp/xs >/dev/null 2>&1 || echo prepare failed
# EVC: evaluate runs with compile true, whose Dynamo import and warm-up thread start beside the weights' copies
(python3 $B evaluate /tmp/xs --runs ${EV:-10}; [ "${EVC:-0}" -gt 0 ] && python3 $B evaluate /tmp/xs --runs $EVC --compile true
 python3 $B finetune /tmp/xs --runs ${FT:-20}; python3 $B imports --repeat 2) > $L 2>&1
cat /tmp/xs/crash-* 2>/dev/null | tail -30
grep -v '^{' $L
grep '^{' $L | python3 bench/bench_helpers.py stress-lines | tail -32
