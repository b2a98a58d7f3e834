"""Several processes: data parallel groups of pipeline stages, and the model's blocks split across a pipeline.

Layout: world = data_parallel x pipeline_stages; ranks p*S .. p*S+S-1 form pipeline p (consecutive ranks, so a
pipeline stays inside a node when S divides the GPUs per node). Each pipeline scores its own share of the items.

Why pipeline rather than tensor parallel for a model larger than one GPU: scoring has no backward pass, so the
batches stream through the stages one after another and every stage is busy except while the first S - 1
batches fill the pipe and the last S - 1 drain it (a few percent over tens of batches); between stages only one
hidden-state tensor per batch travels, point to point, where tensor parallelism would all-reduce two per layer
(60 layers for LLaMA-30B) on every GPU's critical path. The stages run LitGPT's blocks unchanged, and each rank
reads only its own blocks from the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from llmhpc import process_group


@dataclass
class Topology:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    stages: int = 1

    @property
    def data_parallel(self) -> int:
        return self.world // self.stages

    @property
    def pipeline(self) -> int:  # which data-parallel group
        return self.rank // self.stages

    @property
    def stage(self) -> int:
        return self.rank % self.stages

    @property
    def prev_rank(self) -> int | None:
        return self.rank - 1 if self.stage > 0 else None

    @property
    def next_rank(self) -> int | None:
        return self.rank + 1 if self.stage < self.stages - 1 else None


def init_distributed(stages: int, device_kind: str) -> Topology:
    """Topology from the launcher's environment as llmhpc.process_group reads it (torchrun, also one per node,
    `mpirun`, `srun`; one process when none started this one), in its process group (NCCL on GPUs, gloo on CPUs).
    Under mpirun every rank broadcasts through mpi4py here: call it on every rank, before any other collective."""
    ranks = process_group.find()
    if ranks.size % stages:
        raise ValueError(f"{ranks.size} processes cannot form pipelines of {stages} stages")
    if ranks.size > 1:
        process_group.start(ranks, process_group.device(ranks.local_rank, device_kind))
    return Topology(ranks.rank, ranks.size, ranks.local_rank, stages)


def block_ranges(n_layer: int, stages: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal block ranges; the first and last stages, which also hold the embedding and the
    output head, get the smaller shares when the blocks do not divide evenly."""
    base, extra = divmod(n_layer, stages)
    sizes = [base] * stages
    middle = list(range(1, stages - 1)) or list(range(stages))
    for k in range(extra):
        sizes[middle[k % len(middle)]] += 1
    ranges, start = [], 0
    for size in sizes:
        ranges.append((start, start + size))
        start += size
    return ranges


class Transport:
    """Hidden states between neighbouring stages: non-blocking sends (at most `window` in flight, each buffer
    kept alive until its send completes) and receives into fresh buffers."""

    def __init__(self, topo: Topology, window: int = 2):
        self.prev, self.next = topo.prev_rank, topo.next_rank
        self.window = window
        self.in_flight: list[tuple[dist.Work, torch.Tensor]] = []

    def send(self, x: torch.Tensor) -> None:
        x = x.contiguous()
        self.in_flight.append((dist.isend(x, dst=self.next), x))
        while len(self.in_flight) > self.window:
            work, _ = self.in_flight.pop(0)
            work.wait()

    def recv(self, shape: tuple[int, int], width: int, dtype: torch.dtype, device) -> torch.Tensor:
        buf = torch.empty((*shape, width), dtype=dtype, device=device)
        dist.recv(buf, src=self.prev)
        return buf

    def finish(self) -> None:
        for work, _ in self.in_flight:
            work.wait()
        self.in_flight.clear()


def broadcast_object(obj, topo: Topology):
    if topo.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_rank0(obj, topo: Topology) -> list | None:
    if topo.world == 1:
        return [obj]
    out = [None] * topo.world if topo.rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out
