"""The container recipes (Dockerfile in the challenge's form, Apptainer definition): the README's set-up, the
server as the command, no weights in the build context or the image recipe, and both in the submission."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from llmhpc.outputs.bundle import WEIGHT_SUFFIXES
from llmhpc.stages.submission import layout

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
APPTAINER = (REPO / "containers/llmhpc.def").read_text()


def test_both_recipes_run_the_readmes_setup_line_with_the_pinned_requirements():
    assert re.search(r"pip install -r \S*envs/\S+ -e \.", (REPO / "README.md").read_text())
    for recipe in (DOCKERFILE, APPTAINER):
        assert "python3 -m venv .venv" in recipe and re.search(r"\.venv/bin/pip install --no-cache-dir -r \S+ -e \.", recipe)
        assert "envs/cuda.txt" in recipe


def test_the_command_is_llmhpc_serve_on_the_checkpoint_on_helms_port():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["llmhpc-serve"] == "llmhpc.serve.cli:main"
    assert 'CMD ["llmhpc-serve", "--checkpoint", "/checkpoint", "--host", "0.0.0.0", "--port", "8080"]' in DOCKERFILE
    assert "EXPOSE 8080" in DOCKERFILE
    assert re.search(r"exec llmhpc-serve --checkpoint \"\$\{CHECKPOINT:-/checkpoint\}\".*--port \"\$\{PORT:-8080\}\"", APPTAINER)


def test_no_weights_enter_the_build():
    copied = re.findall(r"^COPY (.+) \S+$", DOCKERFILE, flags=re.M)
    sources = [s for line in copied for s in line.split()]
    sources += [line.split()[0] for line in APPTAINER.split("%files")[1].split("%post")[0].splitlines() if line.strip()]
    assert sources and not any(s.startswith("results") or s in (".", "./") for s in sources)
    for source in sources:
        assert (REPO / source.rstrip("/")).exists(), source
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "results/" in ignored
    assert {f"**/*{suffix}" for suffix in WEIGHT_SUFFIXES} <= set(ignored)
    assert "HF_TOKEN" not in DOCKERFILE.replace("env=HF_TOKEN", "").replace("id=hf_token,env=HF_TOKEN", "")


def test_the_submission_carries_both_recipes():
    archived = dict((a, Path(p)) for p, a in layout(["baseline"], repo=REPO))
    assert archived["scripts/build/Dockerfile"] == REPO / "Dockerfile"
    assert archived["scripts/build/containers/llmhpc.def"] == REPO / "containers/llmhpc.def"
    assert not any(a.startswith("outputs/serve/") for a in archived)
    served = dict((a, p) for p, a in layout(["baseline"], repo=REPO, served=["baseline"]))
    assert served["outputs/serve/baseline/metrics.json"] == Path("results/serve/baseline/metrics.json")
