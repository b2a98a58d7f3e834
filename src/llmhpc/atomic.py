"""Outputs written whole or not at all: each file goes to a temporary name beside it, is flushed to disk, then
renamed over the target (rename is atomic within a filesystem). A kill or a full disk never leaves a half-written
file that looks complete, and the previous version stays intact until the new one is whole.

A full disk (or quota) fails with a message naming the file and the filesystem it is on."""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path


def mount_point(path: Path) -> Path:
    path = Path(path).resolve()
    while not path.is_mount() and path != path.parent:
        path = path.parent
    return path


class DiskFullError(OSError):
    """A write ran out of space; the message names the file and the filesystem."""


@contextmanager
def replacing(path, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary file beside `path` for writing; on success it replaces `path`, on any error it is removed
    and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fs = mount_point(path.parent)
            free = shutil.disk_usage(fs).free
            raise DiskFullError(exc.errno, f"no space left writing {path}: the filesystem {fs} is full"
                                           f" ({free / 1e9:.2f} GB free); {path} is unchanged. Free space there or"
                                           f" move results/ to a larger filesystem, then run again") from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    with replacing(path) as fh:
        fh.write(text)


def write_bytes(path, data: bytes) -> None:
    with replacing(path, "wb") as fh:
        fh.write(data)


def write_json(path, data, indent: int = 1) -> None:
    write_text(path, json.dumps(data, indent=indent) + "\n")


def copy_file(src, dst) -> None:
    with open(src, "rb") as fin, replacing(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
