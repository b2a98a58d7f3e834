"""The weights stage's sources `hf` and `path`, then the real litgpt converter.

Source `hf` runs against tests/hf_hub_emulator.py (an emulator of the Hub's HTTP API, the real Hub being out of
reach here), in a subprocess with HF_ENDPOINT set (huggingface_hub reads it at import time) and HF_HOME isolated,
through the workflow's own script (workflow/scripts/weights.py), which sends its output to the rule's log: what a
user reads is that log.
"""

import json
import os
import secrets
import shutil
import string
import subprocess
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO
from hf_hub_emulator import HubEmulator, HubRepo
from llmhpc.sources.tiny import write_tiny_model
from llmhpc.stages import convert, weights

REPO_ID = "org/tiny-gated"
MODEL_NAME = "pythia-14m"
# What write_tiny_model writes: all of it must arrive, and nothing else.
ALLOWED = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
           "special_tokens_map.json"}
DECOYS = {"pytorch_model.bin": 64 * 1024, "training_args.bin": 4 * 1024, "README.md": 0, "optimizer.pt": 128 * 1024,
          "original/consolidated.00.pth": 24 * 1024 * 1024}


def hf_token() -> str:
    """A token shaped like the Hub's user access tokens: hf_ and 34 letters and digits."""
    return "hf_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(34))


TOKEN = hf_token()  # granted access to the gated repository
OTHER_TOKEN = hf_token()  # a valid token without access
REVISION = secrets.token_hex(20)

# Runs the workflow's script (workflow/scripts/weights.py) as Snakemake's `script:` does: a Python process in
# which `snakemake` stands for the job (its params, output and log). The spy only reads: it scans local_dir, including
# the .cache bookkeeping that weights.py deletes afterwards, for the token and writes what it saw (names and
# booleans), and it records the exception huggingface_hub raised, if any, before the stage words it for the user.
FETCH_SCRIPT = r'''
import json, os, runpy, sys, types
from pathlib import Path
import huggingface_hub

_real = huggingface_hub.snapshot_download

def _spy(*args, **kwargs):
    try:
        path = _real(*args, **kwargs)
    except Exception as exc:
        Path(os.environ["TEST_SPY_ERROR"]).write_text(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
        raise
    token = os.environ.get("HF_TOKEN", "").encode()
    local = Path(kwargs["local_dir"])
    seen = {p.relative_to(local).as_posix(): bool(token) and token in p.read_bytes()
            for p in sorted(local.rglob("*")) if p.is_file()}
    Path(os.environ["TEST_SPY_REPORT"]).write_text(json.dumps(seen))
    return path

huggingface_hub.snapshot_download = _spy
model, output, log, script = sys.argv[1:]
snakemake = types.SimpleNamespace(params=types.SimpleNamespace(model=json.loads(model)), output=[output], log=[log])
runpy.run_path(script, init_globals={"snakemake": snakemake}, run_name="__main__")
'''
WEIGHTS_SCRIPT = REPO / "workflow/scripts/weights.py"
# What a traceback from the hub library looks like in a log: its frames and its exceptions' qualified names.
HUB_TRACEBACK = ("Traceback (most recent call last)", "huggingface_hub/", "huggingface_hub.errors.",
                 "The above exception was the direct cause")


def assert_one_clean_line(log: str, expected_start: str) -> None:
    """The rule's log ends with our one line (after huggingface_hub's progress bars) and has no traceback."""
    lines = [line for line in log.splitlines() if line.strip() and not line.startswith("Fetching ")]
    assert lines and lines[-1].startswith(expected_start), mask(log)
    assert len(lines) == 1, mask(log)
    assert not [marker for marker in HUB_TRACEBACK if marker in log], mask(log)


def mask(text: str) -> str:
    """Never echo a token into pytest's own output."""
    return text.replace(TOKEN, "<TOKEN>").replace(OTHER_TOKEN, "<OTHER_TOKEN>")


def files_under(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(Path(root).rglob("*")) if p.is_file()}


def token_in_files(root: Path, token: str) -> list[str]:
    """Every file under root, hidden ones included, read as bytes (symlinks followed)."""
    if not Path(root).exists():
        return []
    return [name for name, p in files_under(root).items() if token.encode() in p.read_bytes()]


def hf_model(revision=REVISION, repo_id=REPO_ID) -> dict:
    return {"source": "hf", "repo_id": repo_id, "revision": revision, "name": MODEL_NAME, "path": None,
            "tiny_vocab_size": 1024, "seed": 42}


@pytest.fixture(scope="module")
def source_repo(tmp_path_factory) -> Path:
    """The repository's content: a tiny Pythia in HF format plus files a download must skip."""
    root = tmp_path_factory.mktemp("hub") / "tiny-gated"
    write_tiny_model(root, MODEL_NAME, 1024, 42)
    assert set(files_under(root)) == ALLOWED
    for name, size in DECOYS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(os.urandom(size) if size else b"# tiny-gated\nA test model.\n")
    return root


@pytest.fixture(scope="module")
def hub(source_repo):
    repo = HubRepo(REPO_ID, source_repo, REVISION, gated="manual", authorized={TOKEN})
    with HubEmulator([repo], valid_tokens={TOKEN, OTHER_TOKEN}) as emulator:
        yield emulator


def run_fetch(hub: HubEmulator, model: dict, out_dir: Path, work: Path, token: str | None) -> SimpleNamespace:
    """The weights job in a subprocess: its process, the rule's log, the spy's report (or None), the exception
    huggingface_hub raised (type and message, or None) and HF_HOME."""
    hf_home, spy, spy_error, log = work / "hf_home", work / "spy.json", work / "spy-error.json", work / "weights.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
           and not k.startswith("HF_HUB_CACHE")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(hf_home), TEST_SPY_REPORT=str(spy), TEST_SPY_ERROR=str(spy_error),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]),
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    if token is not None:
        env["HF_TOKEN"] = token
    hub.clear()
    proc = subprocess.run([sys.executable, "-c", FETCH_SCRIPT, json.dumps(model), str(out_dir), str(log),
                           str(WEIGHTS_SCRIPT)], capture_output=True, text=True, env=env, timeout=120, cwd=work)
    return SimpleNamespace(proc=proc, log=log.read_text() if log.exists() else "",
                           report=json.loads(spy.read_text()) if spy.exists() else None,
                           error=json.loads(spy_error.read_text()) if spy_error.exists() else None, hf_home=hf_home)


@pytest.fixture(scope="module")
def downloaded(hub, tmp_path_factory):
    work = tmp_path_factory.mktemp("download")
    out_dir = work / "weights" / "hf"
    run = run_fetch(hub, hf_model(), out_dir, work, TOKEN)
    assert run.proc.returncode == 0, mask(run.proc.stdout + run.proc.stderr + run.log)
    return {"out_dir": out_dir, "run": run, "report": run.report, "hf_home": run.hf_home,
            "requests": list(hub.requests)}


# --- source hf, with the token ----------------------------------------------------------------------------------


def test_hf_downloads_only_the_allowed_files(downloaded, source_repo):
    got = files_under(downloaded["out_dir"])
    assert set(got) == ALLOWED, sorted(got)
    assert not set(DECOYS) & set(got)
    for name, path in got.items():
        assert not path.is_symlink()
        assert path.read_bytes() == (source_repo / name).read_bytes(), name
    assert "weights ready in" in downloaded["run"].log
    assert REVISION in downloaded["run"].log  # the info printed names the pinned revision
    assert not list(downloaded["out_dir"].parent.glob(".*partial*"))  # the staging directory became out_dir


def test_hf_requests_pin_the_revision_and_carry_the_token(downloaded, hub):
    reqs = downloaded["requests"]
    on_hub = [r for r in reqs if r.server == "hub"]
    files = hub.repos[REPO_ID].files
    api = [r for r in on_hub if r.path.startswith("/api/models/")]
    assert [(r.method, r.path, r.status) for r in api] == [("GET", f"/api/models/{REPO_ID}/revision/{REVISION}", 200)]
    resolve_prefix = f"/{REPO_ID}/resolve/{REVISION}/"
    resolved = [(r.method, r.path, r.status) for r in on_hub if "/resolve/" in r.path]
    # One HEAD per allowed file, none for the decoys: 302 to the CDN for LFS files, 307 to resolve-cache otherwise.
    assert sorted(resolved) == sorted(("HEAD", resolve_prefix + name, 302 if files[name].lfs else 307)
                                      for name in ALLOWED), resolved
    cache_prefix = f"/api/resolve-cache/models/{REPO_ID}/{REVISION}/"
    cached = [(r.method, r.path, r.status) for r in on_hub if r.path.startswith("/api/resolve-cache/")]
    assert sorted(cached) == sorted((method, cache_prefix + name, 200) for name in ALLOWED if not files[name].lfs
                                    for method in ("HEAD", "GET")), cached
    assert len(api) + len(resolved) + len(cached) == len(on_hub)
    assert not any("/main" in r.path for r in on_hub)
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in on_hub)
    # The LFS weights came from the CDN by the signed redirect, and the token was not sent there.
    on_cdn = [r for r in reqs if r.server == "cdn"]
    files = hub.repos[REPO_ID].files
    lfs_blobs = {files[name].sha256 for name in ALLOWED if files[name].lfs}  # model.safetensors, tokenizer.json
    assert files["model.safetensors"].lfs and not files["config.json"].lfs
    assert {(r.method, r.path.rsplit("/", 1)[-1], r.status) for r in on_cdn} == {("GET", b, 200) for b in lfs_blobs}
    assert [r.path for r in on_cdn if "authorization" in r.headers] == []
    leaked = any(TOKEN in json.dumps(r.query) + r.path for r in reqs)
    assert not leaked, "the token is in a URL"


def test_hf_token_is_written_nowhere(downloaded):
    run = downloaded["run"]
    leaked = TOKEN in run.proc.stdout + run.proc.stderr + run.log
    assert not leaked, "the token is in the captured stdout/stderr or the rule's log"
    assert token_in_files(downloaded["out_dir"], TOKEN) == []
    assert token_in_files(downloaded["hf_home"], TOKEN) == []
    # Before weights.py removed it, local_dir held huggingface_hub's .cache bookkeeping: it was scanned too.
    report = downloaded["report"]
    assert report is not None and any(name.startswith(".cache/huggingface/") for name in report), report
    assert set(report) - {n for n in report if n.startswith(".cache/")} == ALLOWED
    assert not any(report.values()), [name for name, hit in report.items() if hit]
    assert not (downloaded["out_dir"] / ".cache").exists()


@pytest.mark.litgpt
def test_hf_download_converts(downloaded, tmp_path):
    lines = []
    info = convert.convert(downloaded["out_dir"], tmp_path / "lit", MODEL_NAME, log=lines.append)
    assert info["forward"] and info["parameters"] > 0
    lit = tmp_path / "lit"
    assert (lit / "lit_model.pth").is_file() and (lit / "model_config.yaml").is_file()
    assert (lit / "tokenizer.json").read_bytes() == (downloaded["out_dir"] / "tokenizer.json").read_bytes()
    assert not any(p.is_symlink() for p in lit.iterdir())  # the weight links were removed after converting
    leaked = any(TOKEN in line for line in lines)
    assert token_in_files(lit, TOKEN) == [] and not leaked


# --- source hf, failures ----------------------------------------------------------------------------------------


@pytest.mark.litgpt
def test_hf_gated_repo_without_token_fails(hub, tmp_path):
    run = run_fetch(hub, hf_model(), tmp_path / "hf", tmp_path, token=None)
    assert run.proc.returncode == 1
    # huggingface_hub raised GatedRepoError: "401 Client Error. Cannot access gated repo for url
    # <endpoint>/org/tiny-gated/resolve/<sha>/<file>. Access to model org/tiny-gated is restricted. You must have
    # access to it and be authenticated to access it. Please log in."
    assert run.error["type"] == "GatedRepoError" and run.error["message"].startswith("401 Client Error."), run.error
    assert "Cannot access gated repo for url" in run.error["message"]
    assert f"Access to model {REPO_ID} is restricted. You must have access to it" in run.error["message"]
    # The user reads one line that names the repository and what to do, and none of the hub library's traceback.
    assert_one_clean_line(run.log, f"weights: model.repo_id {REPO_ID} is a gated repository and HF_TOKEN is not set:"
                                   f" accept its licence at https://huggingface.co/{REPO_ID} with your account, then"
                                   f" `export HF_TOKEN=<a read token of that account>`")
    assert run.proc.stdout + run.proc.stderr == ""  # all of it went to the rule's log
    on_hub = hub.requests_to("hub")
    assert not any("authorization" in r.headers for r in on_hub)
    assert [r.status for r in on_hub if r.path.startswith("/api/models/")] == [200]  # gated metadata is public
    resolved = [(r.method, r.status) for r in on_hub if not r.path.startswith("/api/models/")]
    assert resolved and set(resolved) == {("HEAD", 401)}, resolved
    assert hub.requests_to("cdn") == []
    assert not (tmp_path / "hf").exists()  # nothing that looks like a download, partial or not
    assert not list(tmp_path.glob(".hf*"))  # nor the staging directory


@pytest.mark.litgpt
def test_hf_token_without_access_fails(hub, tmp_path):
    run = run_fetch(hub, hf_model(), tmp_path / "hf", tmp_path, token=OTHER_TOKEN)
    assert run.proc.returncode == 1
    assert run.error["type"] == "GatedRepoError" and run.error["message"].startswith("403 Client Error."), run.error
    assert "you are not in the authorized list" in run.error["message"]
    assert_one_clean_line(run.log, f"weights: HF_TOKEN has no access to the gated repository {REPO_ID}"
                                   f" (model.repo_id): accept its licence at https://huggingface.co/{REPO_ID} with the"
                                   f" account the token belongs to")
    leaked = OTHER_TOKEN in run.proc.stdout + run.proc.stderr + run.log
    assert not leaked, "the token is in the captured stdout/stderr or the rule's log"
    assert not (tmp_path / "hf").exists()
    assert token_in_files(tmp_path, OTHER_TOKEN) == []
    assert all(r.headers.get("authorization") == f"Bearer {OTHER_TOKEN}" for r in hub.requests_to("hub"))


@pytest.mark.litgpt
def test_hf_unknown_revision_fails(hub, tmp_path):
    unknown = secrets.token_hex(20)
    run = run_fetch(hub, hf_model(revision=unknown), tmp_path / "hf", tmp_path, token=TOKEN)
    assert run.proc.returncode == 1
    # "404 Client Error. Revision Not Found for url: <endpoint>/api/models/org/tiny-gated/revision/<sha>.
    #  Invalid rev id: <sha>"
    assert run.error["type"] == "RevisionNotFoundError" and run.error["message"].startswith("404 Client Error.")
    assert f"Invalid rev id: {unknown}" in run.error["message"]
    assert_one_clean_line(run.log, f"weights: model.revision {unknown}: {REPO_ID} has no such revision")
    leaked = TOKEN in run.proc.stdout + run.proc.stderr + run.log
    assert not leaked, "the token is in the captured stdout/stderr or the rule's log"
    assert [(r.path, r.status) for r in hub.requests] == [(f"/api/models/{REPO_ID}/revision/{unknown}", 404)]
    assert not (tmp_path / "hf").exists() or files_under(tmp_path / "hf") == {}


@pytest.mark.litgpt
def test_hf_unknown_repo_fails(hub, tmp_path):
    run = run_fetch(hub, hf_model(repo_id="org/no-such-model"), tmp_path / "hf", tmp_path, token=TOKEN)
    assert run.proc.returncode == 1
    assert run.error["type"] == "RepositoryNotFoundError" and run.error["message"].startswith("404 Client Error.")
    assert_one_clean_line(run.log, "weights: model.repo_id org/no-such-model: no such repository on the Hugging Face"
                                   " hub")
    leaked = TOKEN in run.proc.stdout + run.proc.stderr + run.log
    assert not leaked, "the token is in the captured stdout/stderr or the rule's log"


# --- source hf: what a refusal says, from the client's own exceptions in this process -------------------------------


@pytest.fixture
def small_hub(tmp_path, monkeypatch):
    """The emulator serving a gated repository of two small files, huggingface_hub in this process pointed at it
    (its endpoint is read at import: patched here) with no token of its own."""
    from huggingface_hub import constants

    files = tmp_path / "repo"
    files.mkdir()
    (files / "config.json").write_text("{}")
    (files / "model.safetensors").write_bytes(os.urandom(1024))
    repo = HubRepo(REPO_ID, files, REVISION, gated="manual", authorized={TOKEN})
    with HubEmulator([repo], valid_tokens={TOKEN, OTHER_TOKEN}) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        # read once, at huggingface_hub's first import: an offline test earlier in this process may have set it
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield hub


def test_a_token_the_hub_refuses_is_named_not_called_an_unreachable_hub(small_hub, tmp_path, monkeypatch):
    """A mistyped or expired HF_TOKEN: the hub answers 401, which huggingface_hub passes on as a bare HTTP error."""
    stale = hf_token()
    monkeypatch.setenv("HF_TOKEN", stale)
    with pytest.raises(weights.WeightsError) as err:
        weights.download_hf(REPO_ID, REVISION, tmp_path / "hf")
    message = str(err.value)
    assert message.startswith(f"the Hugging Face hub refused HF_TOKEN for {REPO_ID} (HTTP 401): the token is invalid"
                              f" or expired"), message
    assert "cannot reach" not in message and stale not in message
    assert [r.status for r in small_hub.requests_to("hub")] == [401]


@pytest.mark.parametrize("case", ["gated, no token", "gated, token without access", "token refused", "no such repo"])
def test_a_hub_refusal_is_our_one_message_without_the_hub_traceback(small_hub, tmp_path, monkeypatch, case):
    """fetch() refuses with a WeightsError whose traceback is the stage's alone: huggingface_hub's own exception (and
    its frames, a screenful from utils/_http.py up) is not chained to it, so that no caller prints it."""
    token, repo_id, expected = {
        "gated, no token": (None, REPO_ID, f"model.repo_id {REPO_ID} is a gated repository and HF_TOKEN is not set:"
                                           f" accept its licence at https://huggingface.co/{REPO_ID}"),
        "gated, token without access": (OTHER_TOKEN, REPO_ID, f"HF_TOKEN has no access to the gated repository"
                                                              f" {REPO_ID} (model.repo_id): accept its licence at"
                                                              f" https://huggingface.co/{REPO_ID}"),
        "token refused": (hf_token(), REPO_ID, f"the Hugging Face hub refused HF_TOKEN for {REPO_ID} (HTTP 401): the"
                                               f" token is invalid or expired"),
        "no such repo": (TOKEN, "org/no-such-model", "model.repo_id org/no-such-model: no such repository on the"
                                                     " Hugging Face hub"),
    }[case]
    if token is not None:
        monkeypatch.setenv("HF_TOKEN", token)
    out_dir = tmp_path / "weights" / "hf"
    with pytest.raises(weights.WeightsError) as err:
        weights.fetch(hf_model(repo_id=repo_id), out_dir)
    assert str(err.value).startswith(expected), str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    printed = "".join(traceback.format_exception(err.value))  # what Python prints for it, uncaught
    assert "huggingface_hub" not in printed and "During handling" not in printed, mask(printed)
    assert printed.count("Traceback (most recent call last)") == 1
    assert not (token and token in printed)
    assert not out_dir.exists() and not list(out_dir.parent.glob(".*"))  # nothing partial, not even hidden


def test_a_refusal_without_a_token_says_to_set_hf_token():
    """A 401/403 without the Hub's GatedRepo code (huggingface_hub then raises a bare HTTP error, or hides a 403 in a
    LocalEntryNotFoundError as if the hub were down), and a hub out of reach: each names HF_TOKEN when it is not
    set."""
    import httpx
    from huggingface_hub import errors

    response = httpx.Response(403, request=httpx.Request("HEAD", f"https://huggingface.co/{REPO_ID}/resolve/x/a"))
    try:
        try:
            raise errors.HfHubHTTPError("403 Forbidden", response=response)
        except errors.HfHubHTTPError as http_error:
            raise errors.LocalEntryNotFoundError("check your connection") from http_error
    except errors.LocalEntryNotFoundError as exc:
        hidden = exc
    message = weights.hub_error(hidden, REPO_ID, REVISION, has_token=False)
    assert message.startswith(f"the Hugging Face hub refused {REPO_ID} without a token (HTTP 403): it is gated or"
                              f" private and HF_TOKEN is not set"), message
    offline = weights.hub_error(errors.LocalEntryNotFoundError("no route"), REPO_ID, REVISION, has_token=False)
    assert offline.startswith("cannot reach the Hugging Face hub") and offline.endswith(
        "; HF_TOKEN is not set either, which a gated model (Llama-2) needs")


# --- source path ------------------------------------------------------------------------------------------------


@pytest.mark.litgpt
def test_path_source_links_and_converts(source_repo, tmp_path):
    """A pre-staged copy (what `hf download` leaves: the model files and a README) is linked, not copied."""
    staged = tmp_path / "shared" / "pythia-14m"
    staged.mkdir(parents=True)
    for name in sorted(ALLOWED) + ["README.md"]:
        shutil.copyfile(source_repo / name, staged / name)
    out_dir = tmp_path / "weights" / "hf"
    lines = []
    info = weights.fetch({"source": "path", "path": str(staged), "name": MODEL_NAME}, out_dir, log=lines.append)
    assert info == {"path": str(staged), "files": sorted(ALLOWED | {"README.md"})}
    got = files_under(out_dir)
    assert set(got) == ALLOWED | {"README.md"}
    for name, path in got.items():
        assert path.is_symlink() and path.resolve() == (staged / name).resolve(), name
        assert os.path.samefile(path, staged / name)
    assert (out_dir / "model.safetensors").lstat().st_size < 1024  # a link, not 100s of kB of weights
    assert convert.convert(out_dir, tmp_path / "lit", MODEL_NAME, log=lines.append)["forward"]
    assert (tmp_path / "lit" / "lit_model.pth").is_file()
    assert all(p.is_file() for p in staged.iterdir()) and set(files_under(staged)) == set(got)  # untouched


@pytest.mark.litgpt
def test_path_source_with_pickles_beside_safetensors_converts_from_safetensors(source_repo, tmp_path):
    out_dir = tmp_path / "weights" / "hf"
    info = weights.fetch({"source": "path", "path": str(source_repo), "name": MODEL_NAME}, out_dir, log=print)
    assert {"pytorch_model.bin", "model.safetensors"} <= set(info["files"])
    # the pickles beside the safetensors are left out: litgpt would otherwise unpickle and load them too
    assert convert.convert(out_dir, tmp_path / "lit", MODEL_NAME, log=lambda msg: None)["forward"]


def test_path_source_must_be_a_directory(tmp_path):
    with pytest.raises(weights.WeightsError, match="is not a directory"):
        weights.fetch({"source": "path", "path": str(tmp_path / "missing"), "name": MODEL_NAME}, tmp_path / "hf")


@pytest.mark.subprocess
def test_no_network_says_where_downloads_run(tmp_path):
    """A compute node without internet: the hub cannot be reached, and the error says what to do."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: connection refused, as without a route to the hub
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]

    class Nowhere:
        endpoint = f"http://127.0.0.1:{closed}"

        def clear(self):
            pass

    run = run_fetch(Nowhere(), hf_model(), tmp_path / "hf", tmp_path, token=TOKEN)
    assert run.proc.returncode == 1
    assert_one_clean_line(run.log, f"weights: cannot reach the Hugging Face hub to download {REPO_ID}")
    assert "downloads run on the login node" in run.log
    assert TOKEN not in run.proc.stdout + run.proc.stderr + run.log
