"""A local emulator of the Hugging Face Hub's HTTP API, for TESTS ONLY.

This is an emulator, not the Hub: it was written from huggingface_hub's documented and observed protocol, i.e.
from what the client library huggingface_hub 1.3.7 sends and reads (file_download.py: hf_hub_url,
get_hf_file_metadata, _get_metadata_or_catch_error, http_get; _snapshot_download.py: snapshot_download;
hf_api.py: model_info / repo_info, ModelInfo; utils/_http.py: hf_raise_for_status) and from the Hub's
documented behaviour (gated repositories, ETags being the git blob sha1 for regular files and the sha256 for
LFS files, LFS files being redirected to a CDN with a signed URL) and its observed answers (status codes and
headers seen in public request logs, e.g. the 307 to /api/resolve-cache). No code of the Hub's server was used.

It serves model repositories, each a local directory taken as one commit, on two loop-back HTTP servers run in
background threads:

* the hub, ``endpoint`` (http://127.0.0.1:<port>), pointed at with HF_ENDPOINT:
    - ``GET /api/models/{repo_id}`` and ``GET /api/models/{repo_id}/revision/{revision}``: the model-info JSON
      (``id``, ``sha``, ``siblings`` [with ``size``/``blobId``/``lfs`` when ``?blobs=true``], ``gated``, ...);
    - ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``: regular (non-LFS) files answer, as the Hub has
      done since 2025, 307 with ``X-Repo-Commit`` and a relative ``Location``
      ``/api/resolve-cache/models/{repo_id}/{commit}/{filename}?...`` (which huggingface_hub follows for HEAD,
      keeping the Authorization header, the host being the same), and that URL answers 200 with
      ``X-Repo-Commit``, ``ETag`` (the git blob sha1) and ``Content-Length``; LFS files answer 302 to the CDN
      with ``Location``, ``X-Repo-Commit``, ``X-Linked-Etag`` (the sha256), ``X-Linked-Size`` and the
      ``Content-Length`` of the redirect's own body (so a client must prefer ``X-Linked-Size``, as
      huggingface_hub does). (The Hub now serves most LFS files through Xet, announced by ``X-Xet-Hash``; the
      emulator plays a repository without Xet, which the client downloads over plain HTTP.)
* the CDN, ``cdn_endpoint`` (another port, so another host as far as the client is concerned: huggingface_hub
  drops the Authorization header when it follows such a redirect): ``GET``/``HEAD`` of a signed, expiring blob
  URL, with ``Range`` support.

Access control, as the Hub answers it (status, ``X-Error-Code``, ``X-Error-Message``, JSON ``{"error": ...}``):

* an ``Authorization: Bearer <token>`` whose token the emulator does not know: 401, no error code,
  "Invalid credentials in Authorization header";
* an unknown repository, or a private one the token cannot read: 401 (anonymous) or 404 (authenticated),
  ``RepoNotFound``;
* a gated repository: its model info is public (as on the Hub), but a file under ``resolve`` (or
  ``resolve-cache``) answers 401 ``GatedRepo`` without a token and 403 ``GatedRepo`` with a token that has
  not been granted access;
* an unknown revision: 404 ``RevisionNotFound``; a file missing from the revision: 404 ``EntryNotFound``.

Every request is recorded (server, method, raw path, query, headers, status) in ``HubEmulator.requests``, so that
tests can assert what the client asked for and which headers it sent. Only what ``snapshot_download`` needs is
implemented (no tree listing, uploads, Xet, datasets or spaces): other routes answer 404.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

# The patterns a repository's .gitattributes sends to LFS: a subset of the Hub's default list, plus tokenizer.json,
# which large-vocabulary repositories track with LFS (so that the tests see both kinds of file).
DEFAULT_LFS_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.h5", "*.msgpack", "*.onnx",
                        "*.gguf", "*.model", "*.tar.gz", "*.zip", "tokenizer.json")
LFS_SPEC = "https://git-lfs.github.com/spec/v1"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class RepoFile:
    rfilename: str
    path: Path | None  # None: synthesised content (the .gitattributes)
    content: bytes | None
    size: int
    sha256: str
    lfs: bool

    @property
    def pointer(self) -> bytes:
        return f"version {LFS_SPEC}\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def blob_id(self) -> str:
        """The git object id: of the LFS pointer for LFS files, of the content otherwise."""
        return git_blob_sha1(self.pointer if self.lfs else self.read())

    def read(self) -> bytes:
        return self.content if self.content is not None else self.path.read_bytes()


@dataclass
class HubRepo:
    """One model repository at one commit: the files of ``root`` (recursively) at commit ``sha``.

    ``refs`` maps branch/tag names to the commit (default: ``main``). ``gated`` is False, "auto" or "manual";
    ``authorized`` are the tokens granted access (gated or private repositories)."""

    repo_id: str
    root: Path
    sha: str
    gated: bool | str = False
    private: bool = False
    authorized: set[str] = field(default_factory=set)
    refs: dict[str, str] | None = None
    lfs_patterns: tuple[str, ...] = DEFAULT_LFS_PATTERNS
    files: dict[str, RepoFile] = field(default_factory=dict, init=False)

    def __post_init__(self):
        if self.refs is None:
            self.refs = {"main": self.sha}
        self.root = Path(self.root)
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root).as_posix()
            if p.is_file() and not rel.startswith(".git/"):
                self._add(rel, p, None)
        if ".gitattributes" not in self.files:  # every Hub repository has one, listed in siblings
            text = "".join(f"{pat} filter=lfs diff=lfs merge=lfs -text\n" for pat in self.lfs_patterns)
            self._add(".gitattributes", None, text.encode())

    def _add(self, rel: str, path: Path | None, content: bytes | None) -> None:
        h, size = hashlib.sha256(), 0
        if content is not None:
            h.update(content)
            size = len(content)
        else:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                    size += len(chunk)
        lfs = any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(rel.rsplit("/", 1)[-1], pat)
                  for pat in self.lfs_patterns)
        self.files[rel] = RepoFile(rel, path, content, size, h.hexdigest(), lfs)

    def resolve_revision(self, revision: str) -> str | None:
        if revision == self.sha:
            return self.sha
        return self.refs.get(revision)


@dataclass
class Recorded:
    server: str  # "hub" or "cdn"
    method: str
    path: str  # raw (still percent-encoded) path
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    status: int | None = None


class HubEmulator:
    """Start with ``with HubEmulator([...], valid_tokens={...}) as hub:``; ``hub.endpoint`` is the HF_ENDPOINT."""

    def __init__(self, repos: list[HubRepo], valid_tokens: set[str] = frozenset()):
        self.repos = {r.repo_id: r for r in repos}
        self.valid_tokens = set(valid_tokens)
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(32)
        self._blobs: dict[str, RepoFile] = {}  # sha256 -> file, what the CDN serves
        for repo in repos:
            for f in repo.files.values():
                if f.lfs:
                    self._blobs[f.sha256] = f
        self._hub = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "hub"))
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "cdn"))
        for server in (self._hub, self._cdn):
            server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.cdn_endpoint = f"http://127.0.0.1:{self._cdn.server_address[1]}"
        self._threads: list[threading.Thread] = []

    # --- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> "HubEmulator":
        for server in (self._hub, self._cdn):
            t = threading.Thread(target=server.serve_forever, name=f"hub-emulator-{server.server_address[1]}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- for tests --------------------------------------------------------------------------------------------

    def record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def requests_to(self, server: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.server == server]

    # --- the CDN's signed URLs ----------------------------------------------------------------------------------

    def _sign(self, path: str, expires: int) -> str:
        return hmac.new(self._secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def signed_cdn_url(self, f: RepoFile) -> str:
        path = f"/repos/{f.sha256[:2]}/{f.sha256[2:4]}/{f.sha256}"
        expires = int(time.time()) + 3600
        disposition = quote(f'inline; filename*=UTF-8\'\'{f.rfilename.rsplit("/", 1)[-1]};', safe="")
        return (f"{self.cdn_endpoint}{path}?response-content-disposition={disposition}"
                f"&Expires={expires}&Signature={self._sign(path, expires)}&Key-Pair-Id=EMULATOR")

    def check_signature(self, path: str, query: dict[str, list[str]]) -> bool:
        try:
            expires = int(query["Expires"][0])
            signature = query["Signature"][0]
        except (KeyError, ValueError, IndexError):
            return False
        return expires >= time.time() and hmac.compare_digest(signature, self._sign(path, expires))


def _handler(hub: HubEmulator, role: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "hub-emulator"

        def log_message(self, *args):  # keep test output clean
            pass

        # --- plumbing ---------------------------------------------------------------------------------------

        def _begin(self) -> Recorded:
            parts = urlsplit(self.path)
            rec = Recorded(role, self.command, parts.path, parse_qs(parts.query),
                           {k.lower(): v for k, v in self.headers.items()})
            hub.record(rec)
            return rec

        def _send(self, rec: Recorded, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            rec.status = status
            self.send_response(status)
            headers = {"X-Request-Id": f"Root=1-{secrets.token_hex(4)}-{secrets.token_hex(12)}", **headers}
            headers.setdefault("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

        def _error(self, rec: Recorded, status: int, message: str, code: str | None = None,
                   extra: dict[str, str] | None = None) -> None:
            headers = {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": message, **(extra or {})}
            if code:
                headers["X-Error-Code"] = code
            self._send(rec, status, headers, json.dumps({"error": message}).encode())

        def do_GET(self):
            self._dispatch()

        def do_HEAD(self):
            self._dispatch()

        def do_POST(self):
            rec = self._begin()
            self._error(rec, 404, "Not Found")

        def _dispatch(self):
            rec = self._begin()
            try:
                if role == "cdn":
                    self._cdn(rec)
                else:
                    self._hub(rec)
            except (BrokenPipeError, ConnectionResetError):
                pass

        # --- the hub ----------------------------------------------------------------------------------------

        def _token(self, rec: Recorded) -> tuple[bool, str | None]:
            """(ok, token): not ok means an Authorization header with an unknown token (answered already)."""
            auth = rec.headers.get("authorization")
            if auth is None:
                return True, None
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or token not in hub.valid_tokens:
                self._error(rec, 401, "Invalid credentials in Authorization header")
                return False, None
            return True, token

        def _repo(self, rec: Recorded, repo_id: str, token: str | None) -> HubRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and token not in repo.authorized):
                self._error(rec, 401 if token is None else 404, "Repository not found", "RepoNotFound")
                return None
            return repo

        def _hub(self, rec: Recorded):
            segments = [unquote(s) for s in rec.path.split("/")[1:]]
            if self.command == "GET" and segments[:2] == ["api", "models"] and len(segments) >= 4:
                return self._model_info(rec, segments[2:])
            if self.command in ("GET", "HEAD") and segments[:3] == ["api", "resolve-cache", "models"] \
                    and len(segments) >= 7:
                return self._resolve_cache(rec, "/".join(segments[3:5]), segments[5], "/".join(segments[6:]))
            if len(segments) >= 5 and segments[2] == "resolve":
                return self._resolve(rec, "/".join(segments[:2]), segments[3], "/".join(segments[4:]))
            self._error(rec, 404, "Not Found")

        def _model_info(self, rec: Recorded, rest: list[str]):
            repo_id, revision = "/".join(rest[:2]), "main"
            if len(rest) == 4 and rest[2] == "revision":
                revision = rest[3]
            elif len(rest) != 2:
                return self._error(rec, 404, "Not Found")
            ok, token = self._token(rec)
            if not ok:
                return
            repo = self._repo(rec, repo_id, token)
            if repo is None:
                return
            # A gated repository's metadata and file list are public; only its files need access.
            sha = repo.resolve_revision(revision)
            if sha is None:
                return self._error(rec, 404, f"Invalid rev id: {revision}", "RevisionNotFound")
            blobs = rec.query.get("blobs", ["false"])[0].lower() == "true"
            siblings = []
            for f in repo.files.values():
                s = {"rfilename": f.rfilename}
                if blobs:
                    s.update(size=f.size, blobId=f.blob_id)
                    if f.lfs:
                        s["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
                siblings.append(s)
            now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
            info = {
                "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
                "sha": sha, "lastModified": now, "createdAt": now, "private": repo.private,
                "gated": repo.gated, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                "library_name": "transformers", "siblings": siblings, "spaces": [],
                "usedStorage": sum(f.size for f in repo.files.values()),
            }
            self._send(rec, 200, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(info).encode())

        def _resolve(self, rec: Recorded, repo_id: str, revision: str, filename: str):
            ok, token = self._token(rec)
            if not ok:
                return
            repo = self._repo(rec, repo_id, token)
            if repo is None or not self._access(rec, repo, token):
                return
            found = self._file(rec, repo, revision, filename)
            if found is None:
                return
            sha, f = found
            common = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "Vary": "Origin, Accept",
                      "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Etag,X-Linked-Size,ETag"}
            if f.lfs:
                location = hub.signed_cdn_url(f)
                body = f"Found. Redirecting to {location}".encode()
                return self._send(rec, 302, {
                    **common, "Location": location, "ETag": f'"{f.blob_id}"', "X-Linked-Etag": f'"{f.sha256}"',
                    "X-Linked-Size": str(f.size), "Content-Type": "text/plain; charset=utf-8"}, body)
            location = (f"/api/resolve-cache/models/{repo_id}/{sha}/{quote(filename)}"
                        f"?{quote(rec.path, safe='')}=&etag={quote(chr(34) + f.blob_id + chr(34), safe='')}")
            body = f"Temporary Redirect. Redirecting to {location}".encode()
            self._send(rec, 307, {**common, "Location": location, "Content-Type": "text/plain; charset=utf-8"}, body)

        def _resolve_cache(self, rec: Recorded, repo_id: str, sha: str, filename: str):
            """Where regular files are served from: by commit only, behind the same access checks."""
            ok, token = self._token(rec)
            if not ok:
                return
            repo = self._repo(rec, repo_id, token)
            if repo is None or not self._access(rec, repo, token):
                return
            if sha != repo.sha:
                return self._error(rec, 404, f"Invalid rev id: {sha}", "RevisionNotFound")
            found = self._file(rec, repo, sha, filename)
            if found is not None and found[1].lfs:
                return self._error(rec, 404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
            if found is not None:
                self._send_content(rec, found[1], {"X-Repo-Commit": sha, "ETag": f'"{found[1].blob_id}"',
                                                   "Accept-Ranges": "bytes"})

        def _access(self, rec: Recorded, repo: HubRepo, token: str | None) -> bool:
            """A gated repository's files: 401 without a token, 403 with one not granted access."""
            if not repo.gated or token in repo.authorized:
                return True
            if token is None:
                self._error(rec, 401, f"Access to model {repo.repo_id} is restricted. You must have access to it "
                            "and be authenticated to access it. Please log in.", "GatedRepo")
            else:
                self._error(rec, 403, f"Access to model {repo.repo_id} is restricted and you are not in the "
                            f"authorized list. Visit https://huggingface.co/{repo.repo_id} to ask for access.",
                            "GatedRepo")
            return False

        def _file(self, rec: Recorded, repo: HubRepo, revision: str, filename: str):
            sha = repo.resolve_revision(revision)
            if sha is None:
                return self._error(rec, 404, f"Invalid rev id: {revision}", "RevisionNotFound")
            f = repo.files.get(filename)
            if f is None:
                return self._error(rec, 404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
            return sha, f

        # --- the CDN ----------------------------------------------------------------------------------------

        def _cdn(self, rec: Recorded):
            sha256 = rec.path.rsplit("/", 1)[-1]
            f = hub._blobs.get(sha256)
            if f is None or not hub.check_signature(rec.path, rec.query) or self.command not in ("GET", "HEAD"):
                body = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code></Error>"
                return self._send(rec, 403, {"Content-Type": "application/xml"}, body)
            disposition = rec.query.get("response-content-disposition", [None])[0]
            headers = {"ETag": f'"{f.sha256}"', "Accept-Ranges": "bytes"}
            if disposition:
                headers["Content-Disposition"] = disposition
            self._send_content(rec, f, headers)

        def _send_content(self, rec: Recorded, f: RepoFile, headers: dict[str, str]):
            data = f.read()
            status, rng = 200, rec.headers.get("range")
            if rng and rng.startswith("bytes="):
                start_s, _, end_s = rng[len("bytes="):].split(",")[0].partition("-")
                if start_s == "":  # suffix range: the last N bytes
                    start, end = max(0, len(data) - int(end_s)), len(data) - 1
                else:
                    start, end = int(start_s), (int(end_s) if end_s else len(data) - 1)
                if start >= len(data):
                    return self._send(rec, 416, {"Content-Range": f"bytes */{len(data)}"})
                end = min(end, len(data) - 1)
                headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
                data, status = data[start:end + 1], 206
            self._send(rec, status, {"Content-Type": "application/octet-stream", **headers,
                                     "Content-Length": str(len(data))}, data)

    return Handler
