"""The env stage: check the running environment against the pinned requirements and write a manifest of
what every later stage ran with (Python, torch, litgpt, CUDA, GPUs, packages, host, git commit)."""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path

PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;#]+)")


class EnvError(RuntimeError):
    """The environment does not match the pinned requirements."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(requirements: Path) -> dict[str, str]:
    """{package: version} for every `name==version` line; other lines are ignored."""
    pins = {}
    for line in Path(requirements).read_text().splitlines():
        m = PIN.match(line)
        if m:
            pins[_norm(m.group(1))] = m.group(3)
    return pins


@functools.cache  # read once per job: verify and manifest both ask (0.4 s each on a 2-core machine)
def installed() -> dict[str, str]:
    return {_norm(d.metadata["Name"]): d.version for d in md.distributions() if d.metadata["Name"]}


def _same(pinned: str, have: str) -> bool:
    # torch's CPU and CUDA builds carry a local version (2.13.0+cpu): the pin names the release
    return have == pinned or have.split("+")[0] == pinned


def verify(requirements: Path) -> list[str]:
    """Problems: pinned packages missing or at another version."""
    have = installed()
    problems = []
    for name, version in read_pins(requirements).items():
        if name not in have:
            problems.append(f"{name}=={version} is pinned in {requirements} but not installed")
        elif not _same(version, have[name]):
            problems.append(f"{name}=={version} is pinned in {requirements} but {have[name]} is installed")
    return problems


def git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def torch_build() -> dict:
    """torch's version, CUDA version and the rest of torch/version.py, read without importing torch."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        raise EnvError("torch is not installed")
    found: dict = {}
    exec(Path(spec.submodule_search_locations[0], "version.py").read_text(), found)  # a file of constants
    return {"version": found["__version__"], "cuda": found.get("cuda")}


def manifest(requirements: Path, repo: Path) -> dict:
    build = torch_build()
    cuda = {"cudnn": None, "nccl": None, "gpus": []}
    if build["cuda"]:
        # a CUDA build: ask torch for the GPUs and libraries (a CPU build has none, and importing torch would be
        # 3-4 s of the job that every other job of a small run waits for)
        cuda = _cuda_manifest()
    pkgs = installed()
    gpus = cuda["gpus"]
    return {
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "torch": build["version"],
        "litgpt": pkgs.get("litgpt"),
        "lightning": pkgs.get("lightning"),
        "snakemake": pkgs.get("snakemake"),
        "cuda": build["cuda"],
        "cudnn": cuda["cudnn"],
        "nccl": cuda["nccl"],
        "gpus": gpus,
        "gpu_model": gpus[0]["name"] if gpus else None,
        "cpu_count": __import__("os").cpu_count(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "host_memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "git_commit": git_commit(repo),
        "requirements": str(requirements),
        "pins": read_pins(requirements),
        "packages": dict(sorted(pkgs.items())),
    }


def _cuda_manifest() -> dict:
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name, "memory_gb": round(props.total_memory / 1e9, 1)})
    return {
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None,
        "gpus": gpus,
    }


if __name__ == "__main__":  # used by the env stage to check a freshly built venv from inside it
    found = verify(Path(sys.argv[1]))
    print("\n".join(found) or f"all pins of {sys.argv[1]} satisfied")
    sys.exit(1 if found else 0)
