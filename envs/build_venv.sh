#!/usr/bin/env bash
# Build script (a competition deliverable): a Python virtual environment from the site's modules plus the
# pinned requirements. Run by the env stage in `build` mode on a login node (compute nodes have no internet),
# or by hand:
#
#   bash envs/build_venv.sh VENV_DIR REQUIREMENTS [MODULE ...]
#   bash envs/build_venv.sh /scratch/$PROJECT/$USER/venv envs/cuda.txt python3/3.11.7 cuda/12.2.2
set -euo pipefail
venv="${1:?usage: build_venv.sh VENV_DIR REQUIREMENTS [MODULE ...]}"
requirements="${2:?usage: build_venv.sh VENV_DIR REQUIREMENTS [MODULE ...]}"
shift 2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ "$#" -gt 0 ]; then
  if ! command -v module >/dev/null 2>&1 && [ -f /etc/profile.d/modules.sh ]; then
    source /etc/profile.d/modules.sh
  fi
  module purge
  for m in "$@"; do module load "$m"; done
  module list 2>&1
fi

python3 --version
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade pip
"$venv/bin/python" -m pip install -r "$requirements"
"$venv/bin/python" -m pip install -e "$here"
"$venv/bin/python" -m pip freeze > "$venv/requirements.freeze.txt"
echo "venv ready: $venv"
