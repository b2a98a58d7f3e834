# Sourced by the bench scripts on a GPU machine without internet: installs the wheels carried in .whl/
# (snakemake, litgpt and what they need; docs/gpu-runs.md says how they were downloaded) and sets the
# offline, unbuffered environment. Returns 2 when the install fails.
if compgen -G ".whl/*.whl" >/dev/null; then
  if [ ! -f /tmp/site/.installed ]; then  # once per machine: the scripts of one call share it
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || return 2
    touch /tmp/site/.installed
  fi
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The machine sets PYTHONDONTWRITEBYTECODE and its torch has no compiled bytecode, so every process would compile
# torch's sources again (`import torch` took 4 s, 1.6 s of it compiling): an installed environment has its .pyc
# files. Bytecode goes to a cache of its own (the packages' folders may be read-only), filled by the first import.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pycache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
