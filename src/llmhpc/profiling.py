"""Where a profiled step's device time goes, beyond the table of top kernels: how long some kernel was running
(busy), how long compute kernels ran, how long collectives (NCCL) ran with no compute beside them (exposed
communication), and how long the device ran nothing at all between the step's first and last kernel (idle:
waiting for the host or for a synchronisation). A kernel table sums each kernel's own time, so it cannot show
either of the last two; they are what a faster matrix product (float8) uncovers.

Pure functions over (start, end, is_communication) intervals in microseconds, and one adapter from a
torch.profiler result; the main process of the fine-tune engine prints the line. Also the kernel table itself,
shared by the engine's profiled step and the server's (`llmhpc-serve --profile-out`)."""

from __future__ import annotations

COMMUNICATION = ("nccl", "allgather", "reducescatter", "allreduce", "all_gather", "reduce_scatter", "all_reduce")


def covered(intervals) -> float:
    """Total length of the union of (start, end) intervals."""
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def device_timeline(kernels: list[tuple[float, float, bool]]) -> dict[str, float]:
    """Milliseconds of the step's device span (first kernel start to last kernel end), busy, compute,
    communication, communication with no compute running (exposed) and idle, from kernels as (start us, end us,
    is_communication)."""
    if not kernels:
        return {}
    span = max(e for _, e, _ in kernels) - min(s for s, _, _ in kernels)
    busy = covered([(s, e) for s, e, _ in kernels])
    compute = covered([(s, e) for s, e, comm in kernels if not comm])
    comm = covered([(s, e) for s, e, comm in kernels if comm])
    ms = {"span": span, "busy": busy, "compute": compute, "communication": comm,
          "communication_exposed": busy - compute, "idle": span - busy}
    return {k: round(v / 1e3, 3) for k, v in ms.items()}


def is_communication(name: str) -> bool:
    low = name.lower().replace(" ", "")
    return any(word in low for word in COMMUNICATION)


def kernel_intervals(events) -> list[tuple[float, float, bool]]:
    """The device kernels of a torch.profiler event list (`prof.events()`) as intervals: events on a CUDA
    device with a time range (operators on the CPU are left out)."""
    out = []
    for event in events:
        device = str(getattr(event, "device_type", "")).rsplit(".", 1)[-1].upper()
        if device != "CUDA" or getattr(event, "time_range", None) is None:
            continue
        start, end = event.time_range.start, event.time_range.end
        if end > start:
            out.append((float(start), float(end), is_communication(event.name)))
    return out


def describe(timeline: dict[str, float]) -> str:
    if not timeline:
        return "no device kernels recorded"
    t, pct = timeline, (lambda x: f"{100 * x / timeline['span']:.0f} %" if timeline["span"] else "-")  # noqa: E731
    return (f"device span {t['span']:.1f} ms: kernels running {t['busy']:.1f} ms ({pct(t['busy'])}), compute "
            f"{t['compute']:.1f} ms, communication {t['communication']:.1f} ms of which {t['communication_exposed']:.1f}"
            f" ms with no compute beside it ({pct(t['communication_exposed'])}), nothing running {t['idle']:.1f} ms "
            f"({pct(t['idle'])})")


def top_table(profiler, rows: int = 10, width: int = 60) -> str:
    """The profiler's top `rows` operators and kernels by their own device time (the operators around a kernel
    would count it twice), or by CPU time where nothing ran on a GPU."""
    import torch

    events = profiler.key_averages()
    keys = ("self_device_time_total", "self_cuda_time_total") if torch.cuda.is_available() else ()
    for key in keys + ("self_cpu_time_total",):
        try:
            return events.table(sort_by=key, row_limit=rows, max_name_column_width=width)
        except (AttributeError, KeyError, ValueError):
            continue
    return str(events)
