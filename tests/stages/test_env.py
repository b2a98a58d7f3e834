"""The env stage: pins are read and checked against what is installed."""

import importlib.metadata as md
import json
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from llmhpc.stages.env import read_pins, verify


def test_read_pins_handles_extras_and_comments(tmp_path):
    req = tmp_path / "r.txt"
    req.write_text("# c\ntorch==2.13.0\nlm-eval[hf]==0.4.13  # x\nmpi4py\nPyYAML==6.0.3\n")
    assert read_pins(req) == {"torch": "2.13.0", "lm-eval": "0.4.13", "pyyaml": "6.0.3"}


def test_verify_names_mismatch_and_missing(tmp_path):
    req = tmp_path / "r.txt"
    have = md.version("pyyaml")
    req.write_text(f"pyyaml=={have}\njsonschema==0.0.1\nno-such-package-xyz==1.0\n")
    problems = verify(req)
    assert len(problems) == 2
    assert any("jsonschema==0.0.1 is pinned" in p and "is installed" in p for p in problems)
    assert any("no-such-package-xyz==1.0" in p and "not installed" in p for p in problems)


def test_this_environment_matches_the_cpu_pins():
    assert verify(REPO / "envs/cpu.txt") == []


def test_conda_env_has_the_same_pins():
    conda = yaml.safe_load((REPO / "envs/conda.yaml").read_text())
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    lines = "\n".join(pip)
    (REPO / "envs/cpu.txt").read_text()
    assert read_pins_text(lines) == read_pins(REPO / "envs/cpu.txt")


def read_pins_text(text, tmp=None):
    import tempfile
    from pathlib import Path

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write(text)
    return read_pins(Path(fh.name))


@pytest.mark.subprocess
def test_manifest_reads_torchs_build_as_torch_reports_it_without_importing_it_on_a_cpu_build():
    """torch/version.py read as a file gives what `import torch` says; a CPU build then has no GPU to ask about."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from llmhpc.stages import env\n"
        "m = env.manifest(Path('envs/cpu.txt'), Path('.'))\n"
        "imported = 'torch' in sys.modules\n"
        "import torch\n"
        "print(json.dumps([imported, m['torch'] == torch.__version__, m['cuda'] == torch.version.cuda, m['gpus']]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported, same_version, same_cuda, gpus = json.loads(proc.stdout.splitlines()[-1])
    assert same_version and same_cuda
    import torch

    if torch.version.cuda is None:
        assert (imported, gpus) == (False, [])
