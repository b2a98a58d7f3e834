"""torch.compile's bookkeeping shared by the fine-tune engine and the fast scorer."""

from __future__ import annotations


def compiled_graphs() -> int:
    """Graphs Dynamo has compiled in this process so far (a per-process count: take differences). 0 before
    Dynamo is imported (importing it only to count takes seconds)."""
    import sys

    if "torch._dynamo" not in sys.modules:
        return 0
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
