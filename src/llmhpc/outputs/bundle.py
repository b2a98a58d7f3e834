"""A reproducible, checked tar.gz: the mechanics under the submission stage.

The competitions want the build and setup scripts, the run scripts (job scripts as submitted), the LitGPT
config files and the output texts (stdout, scheduler output files, metrics), plus the slides, and never the
model files. This module (the submission stage, llmhpc.stages.submission, says which files)

- collects the files: an explicit list of (source, archive path) pairs, plus whatever exists at run time under
  optional folders (``results/jobs``, ``results/logs``);
- checks them before anything is written: model weights (by extension) and files over the size limit are
  refused; secrets are looked for (the values of token-like environment variables such as ``HF_TOKEN``, and
  token-like strings: Hugging Face, GitHub, AWS keys, private keys, ``api_key=...``/``token: ...``
  assignments with long random values). Secrets in text files are **redacted** (replaced by
  ``[REDACTED:<kind>]``; the MANIFEST and the log name the file and the kind, never the value): a log that
  printed a token is still worth submitting. A secret in a binary file (a PDF, anything not UTF-8 text) cannot
  be redacted safely, so that file is **refused**. Every refusal is collected first, then one BundleError
  names every offending file and why;
- writes the archive reproducibly: members sorted, every mtime fixed (``SOURCE_DATE_EPOCH`` if set, else 0),
  uid/gid 0 with empty owner names, modes 0644 (0755 for executables and folders), gzip header without time
  or file name. The same inputs give the same bytes, so a submission is verified by its sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import re
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Mapping

from llmhpc import atomic

# Model files: never submitted, whatever their size.
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".gguf")
MB = 1_000_000

# Environment variables whose values are secrets wherever they appear. HF_TOKEN is the one the workflow reads;
# the suffixes catch the usual others (WANDB_API_KEY, GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY, ...).
SECRET_ENV_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
SECRET_ENV_SUFFIXES = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "ACCESS_KEY", "SECRET_KEY",
                       "PRIVATE_KEY")
# Shorter values would match ordinary words; real tokens are 20+ characters.
MIN_SECRET_LEN = 8

# Specific token formats first; the generic assignment pattern runs last, on what they left.
TOKEN_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("private-key", re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----)?",
                               re.S)),
    ("hf-token", re.compile(rb"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}(?![A-Za-z0-9_])")),
    ("github-token", re.compile(rb"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})")),
    ("aws-access-key", re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])")),
    ("bearer-token", re.compile(rb"(?i)(?<=bearer )[A-Za-z0-9_\-.=+/]{20,}")),
]
ASSIGNMENT = re.compile(
    rb"(?i)(?<![A-Za-z0-9])(?P<key>[A-Za-z0-9_.-]*(?:api[_-]?key|secret|token|passw(?:or)?d))"
    rb"(?P<sep>[\"']?[ \t]*[:=][ \t]*[\"']?)(?P<value>[A-Za-z0-9_\-+/=.]{20,})")


class BundleError(ValueError):
    """The bundle cannot be made; the message names every offending file and the reason."""


@dataclass(frozen=True)
class Member:
    """One file of the archive: read from `source`, or generated (`data`)."""

    arcname: str
    source: Path | None = None
    data: bytes | None = None

    def origin(self) -> str:
        return str(self.source) if self.source is not None else "generated"


@dataclass
class Summary:
    path: Path
    sha256: str
    files: int
    bytes: int  # total size of the members, uncompressed
    archive_bytes: int
    redactions: dict[str, dict[str, int]] = field(default_factory=dict)  # arcname -> {kind: count}

    def sha256_line(self) -> str:
        """`sha256sum` format, with the archive's file name: `sha256sum -c` in its folder checks it."""
        return f"{self.sha256}  {self.path.name}\n"


# --- collect ----------------------------------------------------------------------------------------------

def _skipped(rel: PurePosixPath) -> bool:
    """Caches and hidden files (.snakemake_timestamp, editor swap files) are not part of a submission."""
    return any(p.startswith(".") or p == "__pycache__" for p in rel.parts) or rel.suffix == ".pyc"


def tree(directory, arc_prefix: str, exclude: Iterable = ()) -> list[tuple[Path, str]]:
    """(source, archive path) for every file under `directory`, sorted; [] when it does not exist."""
    directory = Path(directory)
    excluded = {Path(e).resolve() for e in exclude}
    if not directory.is_dir():
        return []
    pairs = []
    for path in sorted(directory.rglob("*")):
        rel = PurePosixPath(path.relative_to(directory).as_posix())
        if path.is_file() and not _skipped(rel) and path.resolve() not in excluded:
            pairs.append((path, f"{arc_prefix}/{rel}"))
    return pairs


def collect(pairs: Iterable[tuple], optional_dirs: Iterable[tuple] = (), exclude: Iterable = (),
            generated: Mapping[str, bytes] | None = None) -> list[Member]:
    """Members from explicit (source, archive path) pairs (each must exist), plus every file under the
    optional folders that exist, plus generated files. Raises BundleError naming missing sources and
    archive paths used twice."""
    members: list[Member] = []
    missing = []
    for source, arcname in pairs:
        source = Path(source)
        if not source.is_file():
            missing.append(f"{source} (for {arcname})")
        members.append(Member(_clean_arcname(arcname), source=source))
    if missing:
        raise BundleError("submission: input file(s) missing:\n  " + "\n  ".join(missing))
    for directory, prefix in optional_dirs:
        members += [Member(_clean_arcname(a), source=p) for p, a in tree(directory, prefix, exclude)]
    for arcname, data in (generated or {}).items():
        members.append(Member(_clean_arcname(arcname), data=data))
    seen: dict[str, Member] = {}
    twice = []
    for m in members:
        if m.arcname in seen:
            twice.append(f"{m.arcname}: from {seen[m.arcname].origin()} and {m.origin()}")
        seen[m.arcname] = m
    if twice:
        raise BundleError("submission: archive path(s) used twice:\n  " + "\n  ".join(twice))
    return sorted(members, key=lambda m: m.arcname.split("/"))


def _clean_arcname(arcname: str) -> str:
    p = PurePosixPath(arcname)
    if p.is_absolute() or ".." in p.parts or not p.parts or arcname in ("MANIFEST",):
        raise BundleError(f"submission: archive path {arcname!r} must be relative, without '..', and not MANIFEST")
    return p.as_posix()


# --- check ------------------------------------------------------------------------------------------------

def secret_env_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{variable name: value} of the environment's secrets (HF_TOKEN and *_TOKEN, *_API_KEY, ...)."""
    environ = os.environ if environ is None else environ
    out = {}
    for name, value in sorted(environ.items()):
        upper = name.upper()
        if upper in SECRET_ENV_NAMES or upper.endswith(SECRET_ENV_SUFFIXES):
            if len(value.strip()) >= MIN_SECRET_LEN:
                out[name] = value.strip()
    return out


def _looks_random(value: bytes) -> bool:
    """A long value with letters and digits and high character entropy: a key, not a word or a path."""
    text = value.decode("ascii", "replace")
    if not (any(c.isdigit() for c in text) and any(c.isalpha() for c in text)):
        return False
    counts = Counter(text)
    entropy = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    return entropy >= 3.5


def redact(data: bytes, env_secrets: Mapping[str, str]) -> tuple[bytes, Counter]:
    """Replace every secret in `data` by [REDACTED:<kind>]; return the new bytes and {kind: count}."""
    found: Counter = Counter()
    # Longest values first, so that one secret containing another is replaced whole.
    for name, value in sorted(env_secrets.items(), key=lambda kv: -len(kv[1])):
        n = data.count(value.encode())
        if n:
            data = data.replace(value.encode(), f"[REDACTED:env:{name}]".encode())
            found[f"env:{name}"] += n
    for kind, pattern in TOKEN_PATTERNS:
        data, n = pattern.subn(f"[REDACTED:{kind}]".encode(), data)
        if n:
            found[kind] += n

    def assignment(m: re.Match) -> bytes:
        if not _looks_random(m["value"]):
            return m[0]
        found["assignment"] += 1
        return m["key"] + m["sep"] + b"[REDACTED:assignment]"

    data = ASSIGNMENT.sub(assignment, data)
    return data, found


def is_text(data: bytes) -> bool:
    """UTF-8 without NUL bytes, and not a PDF (a PDF is binary even when it is ASCII: redacting would
    shift its byte offsets)."""
    if b"\0" in data or data.startswith(b"%PDF-"):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _views(data: bytes, name: str) -> list[bytes]:
    """The bytes of a binary file as a reader would see them: raw, gunzipped, a PDF's text and its
    decompressed streams (a PDF's text is not in its raw bytes)."""
    views = [data]
    if data[:2] == b"\x1f\x8b":
        try:
            views.append(gzip.decompress(data))
        except (OSError, EOFError, zlib.error):
            pass
    if data[:5] == b"%PDF-" or name.lower().endswith(".pdf"):
        for m in re.finditer(rb"stream\r?\n(.*?)endstream", data, re.S):
            if re.search(rb"/Subtype\s*/Image", data[max(0, data.rfind(b"obj", 0, m.start())):m.start()]):
                continue  # an image's pixels hold no text to match (the deck's plots: megabytes each to scan)
            try:
                views.append(zlib.decompress(m[1]))
            except zlib.error:
                pass
        try:
            from pypdf import PdfReader

            text = "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)
            # Lines may break a long token on the slide; look at the text without whitespace too.
            views += [text.encode(), re.sub(r"\s+", "", text).encode()]
        except ImportError:
            pass  # raw bytes and decompressed streams are still checked
        except Exception as exc:  # an unreadable PDF is not a reason to let a secret through unchecked
            raise BundleError(f"cannot read it as a PDF to check it for secrets ({exc})") from exc
    return views


def check(members: list[Member], max_file_mb: float, env_secrets: Mapping[str, str]
          ) -> tuple[dict[str, bytes], dict[str, dict[str, int]]]:
    """Read and check every member. Returns ({arcname: bytes as archived}, {arcname: {kind: redactions}}).
    Raises one BundleError that names every refused file and why."""
    limit = max_file_mb * MB
    problems = []
    contents: dict[str, bytes] = {}
    redactions: dict[str, dict[str, int]] = {}
    for m in members:
        where = f"{m.arcname} ({m.origin()})"
        suffix = PurePosixPath(m.arcname).suffix.lower()
        source_suffix = m.source.suffix.lower() if m.source is not None else suffix
        if suffix in WEIGHT_SUFFIXES or source_suffix in WEIGHT_SUFFIXES:
            problems.append(f"{where}: model weights (*{source_suffix if source_suffix in WEIGHT_SUFFIXES else suffix})"
                            " are never submitted")
            continue
        size = m.source.stat().st_size if m.source is not None else len(m.data)
        if size > limit:
            problems.append(f"{where}: {size / MB:.1f} MB ({size} bytes) is over submission.max_file_mb ="
                            f" {max_file_mb:g} MB")
            continue
        data = m.source.read_bytes() if m.source is not None else m.data
        if is_text(data):
            data, found = redact(data, env_secrets)
            if found:
                redactions[m.arcname] = dict(sorted(found.items()))
        else:
            kinds = set()
            try:
                for view in _views(data, m.arcname):
                    kinds |= set(redact(view, env_secrets)[1])
            except BundleError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if kinds:
                problems.append(f"{where}: secret found in a binary file ({', '.join(sorted(kinds))}); it cannot be"
                                " redacted, remove it where the file is made")
                continue
        contents[m.arcname] = data
    if problems:
        raise BundleError(f"submission refused, nothing written ({len(problems)} file(s)):\n  "
                          + "\n  ".join(problems))
    return contents, redactions


# --- write ------------------------------------------------------------------------------------------------

def manifest_text(contents: Mapping[str, bytes], redactions: Mapping[str, Mapping[str, int]]) -> str:
    lines = ["# MANIFEST: every other file of this archive, sorted: path<TAB>size in bytes<TAB>sha256,",
             "# then, where secrets were replaced by [REDACTED:<kind>] before hashing, <TAB>redacted: <kind> x<count>."]
    for arcname in sorted(contents):
        data = contents[arcname]
        line = f"{arcname}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}"
        if arcname in redactions:
            line += "\tredacted: " + ", ".join(f"{k} x{n}" for k, n in sorted(redactions[arcname].items()))
        lines.append(line)
    return "\n".join(lines) + "\n"


def source_date_epoch(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    value = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise BundleError(f"SOURCE_DATE_EPOCH must be a whole number of seconds, got {value!r}")
    return int(value)


def _tarinfo(name: str, mtime: int, size: int = 0, directory: bool = False, executable: bool = False):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory or executable else 0o644
    info.size = size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_archive(path, root: str, contents: Mapping[str, bytes], executables: Iterable[str] = (),
                  mtime: int = 0) -> bytes:
    """Write `contents` ({arcname: bytes}) under the folder `root` as a reproducible tar.gz; return its bytes."""
    executables = set(executables)
    dirs = {root}
    for arcname in contents:
        parts = arcname.split("/")[:-1]
        dirs |= {"/".join([root, *parts[:i]]) for i in range(1, len(parts) + 1)}
    entries = [(d, None) for d in dirs] + [(f"{root}/{a}", a) for a in contents]
    entries.sort(key=lambda e: e[0].split("/"))  # a folder before what it holds, in a fixed order
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, arcname in entries:
            if arcname is None:
                tar.addfile(_tarinfo(name, mtime, directory=True))
            else:
                data = contents[arcname]
                tar.addfile(_tarinfo(name, mtime, len(data), executable=arcname in executables), io.BytesIO(data))
    packed = io.BytesIO()
    # filename="" and mtime=0: the gzip header carries neither a name nor a time.
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    data = packed.getvalue()
    path = Path(path)
    atomic.write_bytes(path, data)
    return data


def build(members: list[Member], path, max_file_mb: float, root: str | None = None,
          environ: Mapping[str, str] | None = None, log: Callable[[str], None] = print) -> Summary:
    """Check every member, then write the archive with its MANIFEST. Nothing is written when a file is
    refused. `root` is the archive's top folder (default: the archive's name without .tar.gz)."""
    path = Path(path)
    root = root or path.name.removesuffix(".tar.gz")
    env_secrets = secret_env_values(environ)
    log(f"checking {len(members)} files (limit {max_file_mb:g} MB; secrets: token patterns"
        f"{', values of ' + ', '.join(env_secrets) if env_secrets else ''})")
    contents, redactions = check(members, max_file_mb, env_secrets)
    for arcname, kinds in redactions.items():
        log(f"redacted in {arcname}: " + ", ".join(f"{k} x{n}" for k, n in kinds.items()))
    contents = dict(contents)
    contents["MANIFEST"] = manifest_text(contents, redactions).encode()
    executables = [m.arcname for m in members if m.source is not None and m.source.stat().st_mode & 0o111]
    data = write_archive(path, root, contents, executables, source_date_epoch(environ))
    summary = Summary(path=path, sha256=hashlib.sha256(data).hexdigest(), files=len(contents),
                      bytes=sum(len(v) for v in contents.values()), archive_bytes=len(data), redactions=redactions)
    log(f"wrote {path}: {summary.files} files, {summary.bytes} bytes ({summary.archive_bytes} compressed),"
        f" sha256 {summary.sha256}")
    return summary


