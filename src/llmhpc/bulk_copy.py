"""Many CPU tensors to one GPU in a few large transfers: how a checkpoint's weights reach the device.

The tensors of a memory-mapped checkpoint (torch.load(mmap=True) of lit_model.pth, or the views of a
.safetensors file) lie side by side in the process's address space, in file order. Copied one by one, each
tensor is a pageable host-to-device copy that CUDA stages through a small pinned buffer of its own, and a
checkpoint reaches the GPU at 1.4-1.7 GB/s. Here neighbouring tensors are grouped into spans of up to
`piece_bytes`; each span is copied from the mapped pages into one of two pinned buffers (the page cache's
memory bandwidth, several threads) and from there to the GPU in one asynchronous copy, so the next span's host
copy runs while the previous one crosses the bus. Only the bytes of the tensors asked for are read: a row slice
of a tensor (a process's shard) reads only its rows.

fastsafetensors does the same for .safetensors files, but LitGPT's checkpoints are torch zip files
(lit_model.pth), which it does not read; torch offers the pieces (memory-mapped load, pinned memory,
non-blocking copies) but no batched loader, so this module puts those pieces together.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

PIECE_BYTES = 256 << 20  # one pinned staging buffer (two are used); a larger tensor crosses in several pieces
# Tensors closer than a page share a span, and the bytes between them (a zip entry's header) are copied too. Never
# more: a gap shorter than a page lies in the pages of its two neighbours, so it is mapped memory whatever owns it.
GAP_BYTES = mmap.PAGESIZE - 1


@dataclass
class Span:
    """Address range [start, end) of host memory holding the tensors `items`, copied as one block."""

    start: int
    end: int
    items: list[tuple[str, torch.Tensor]] = field(default_factory=list)


def batchable(t: torch.Tensor) -> bool:
    """A dense CPU tensor whose elements are one block of memory (a view of a mapped file, a row slice)."""
    return t.device.type == "cpu" and t.is_contiguous() and t.numel() > 0 and t.layout == torch.strided \
        and not t.is_sparse and t.data_ptr() != 0


def plan(tensors: dict[str, torch.Tensor], span_bytes: int = PIECE_BYTES) -> list[Span]:
    """Group the tensors by address: a span grows while the next tensor starts within GAP_BYTES of its end and
    the span stays within `span_bytes` (a single larger tensor is a span of its own)."""
    spans: list[Span] = []
    for name, t in sorted(tensors.items(), key=lambda kv: kv[1].data_ptr()):
        begin, end = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
        last = spans[-1] if spans else None
        if last is not None and begin >= last.start and begin - last.end <= GAP_BYTES and \
                max(end, last.end) - last.start <= span_bytes:
            last.end = max(last.end, end)
            last.items.append((name, t))
        else:
            spans.append(Span(begin, end, [(name, t)]))
    return spans


def _host_bytes(start: int, end: int) -> torch.Tensor:
    """The host memory [start, end) as a uint8 tensor, no copy (valid while the owner of the memory lives)."""
    return torch.frombuffer((ctypes.c_char * (end - start)).from_address(start), dtype=torch.uint8)


class _Stager:
    """Two pinned buffers used in turn: a buffer is refilled only after the GPU has finished copying out of it."""

    def __init__(self, size: int, threads: int, device: torch.device):
        self.gpu = device.type == "cuda"  # elsewhere (the CPU, in tests) the same steps run synchronously
        self.buffers = [torch.empty(size, dtype=torch.uint8, pin_memory=self.gpu) for _ in range(2)]
        self.done: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0
        self.threads = max(1, threads)
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def copy(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """dst (GPU) <- src (host, pageable): through the next pinned buffer, asynchronously on the current
        stream; `src` may be larger than a buffer (it goes in pieces)."""
        size = self.buffers[0].numel()
        for offset in range(0, src.numel(), size):
            n = min(size, src.numel() - offset)
            i = self.turn
            self.turn = 1 - i
            if self.done[i] is not None:
                self.done[i].synchronize()
            staging = self.buffers[i][:n]
            self._fill(staging, src[offset:offset + n])
            dst[offset:offset + n].copy_(staging, non_blocking=self.gpu)
            if self.gpu:
                self.done[i] = torch.cuda.Event()
                self.done[i].record()

    def _fill(self, staging: torch.Tensor, src: torch.Tensor) -> None:
        """Host copy in `threads` parts at once (torch releases the GIL while it copies)."""
        if self.pool is None or src.numel() < (8 << 20):
            staging.copy_(src)
            return
        step = -(-src.numel() // self.threads)
        parts = [(staging[a:a + step], src[a:a + step]) for a in range(0, src.numel(), step)]
        for f in [self.pool.submit(d.copy_, s) for d, s in parts]:
            f.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        for e in self.done:
            if e is not None:
                e.synchronize()


def to_device(tensors: dict[str, torch.Tensor], device, piece_bytes: int = PIECE_BYTES, threads: int = 8,
              batched: bool | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, the tensor on `device`) for every tensor, in address order; each yielded tensor is ready to
    use on the current stream (copies are ordered before the caller's work). A tensor that is not one block of
    CPU memory, or a device that is not a GPU, is copied on its own with `.to`. A span's GPU memory is freed once
    no yielded tensor of it is referenced any more, so a caller that copies each tensor into its parameter and
    drops it holds at most a span or two of extra GPU memory. `batched` None: batched on a GPU only (True runs
    the same steps to the CPU, which is how the tests check them)."""
    device = torch.device(device)
    if not (device.type == "cuda" if batched is None else batched):
        for name, t in tensors.items():
            yield name, t.to(device)
        return
    alone = {k: t for k, t in tensors.items() if not batchable(t)}
    for name, t in alone.items():
        yield name, t.to(device)
    spans = plan({k: t for k, t in tensors.items() if k not in alone}, span_bytes=piece_bytes)
    if not spans:
        return
    stager = _Stager(min(piece_bytes, max(s.end - s.start for s in spans)), threads, device)
    try:
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            for span in spans:
                block = torch.empty(span.end - span.start, dtype=torch.uint8, device=device)
                stager.copy(block, _host_bytes(span.start, span.end))
                for name, t in span.items:
                    begin = t.data_ptr() - span.start
                    raw = block[begin:begin + t.numel() * t.element_size()]
                    if begin % t.element_size():  # a view needs an aligned start (safetensors may pack odd sizes)
                        raw = raw.clone()
                    yield name, raw.view(t.dtype).view(t.shape)
                del block
    finally:
        stager.close()
