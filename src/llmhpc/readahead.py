"""Asking the kernel to read a checkpoint's weights into the page cache now, while the process is still starting
(Python, torch and LitGPT's imports take 10-15 s per process), so that the load later finds them in memory. On a
parallel filesystem with a cold cache, reading 13.5 GB can take longer than those imports. Standard library
only: the fine-tune engine calls it before importing torch."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def weight_files(checkpoint_dir: Path) -> list[Path]:
    """lit_model.pth, or a Hugging Face checkpoint's safetensors files."""
    checkpoint_dir = Path(checkpoint_dir)
    lit = checkpoint_dir / "lit_model.pth"
    return [lit] if lit.is_file() else sorted(checkpoint_dir.glob("*.safetensors"))


def prefetch(checkpoint_dir: Path) -> threading.Thread | None:
    """Start read-ahead of the weights in a daemon thread (the advice can block while it queues the reads);
    None where the platform has no posix_fadvise. Errors are ignored: this only makes a later read faster."""
    if not hasattr(os, "posix_fadvise"):
        return None
    files = weight_files(checkpoint_dir)

    def advise() -> None:
        for path in files:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    thread = threading.Thread(target=advise, name="readahead", daemon=True)
    thread.start()
    return thread
