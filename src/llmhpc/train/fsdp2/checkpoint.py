"""Loading `checkpoint_dir/lit_model.pth` into the (sharded) model, and gathering and writing the final
`out_dir/final/lit_model.pth` ({"model": state dict}, as Fabric saves it); the files stock writes beside it are
llmhpc.train.fsdp2.run_files'."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import torch

from llmhpc import bulk_copy
from llmhpc.train.fsdp2 import converters


def dtensor_class() -> type | tuple:
    """DTensor, or () where torch.distributed.tensor was never imported (then no parameter can be one): importing
    it costs a single-GPU run's start-up about 0.4 s for nothing."""
    module = sys.modules.get("torch.distributed.tensor")
    return module.DTensor if module is not None else ()


def read_state(checkpoint_dir: Path) -> dict:
    """Memory-mapped: every process of a node reads the same pages of the page cache."""
    state = torch.load(Path(checkpoint_dir) / "lit_model.pth", mmap=True, weights_only=True, map_location="cpu")
    return state.get("model", state)


@torch.no_grad()
def load_into(gpt, state: dict) -> None:
    """Copy the checkpoint into the model's parameters; a sharded (DTensor) parameter takes only its shard, and
    only the shard's rows are read. On a GPU the tensors travel in a few large batched copies (llmhpc.bulk_copy)
    and change dtype on the device."""
    params = dict(gpt.named_parameters())
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise KeyError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    sources, targets = {}, {}
    dtensor = dtensor_class()
    for name, param in params.items():
        if isinstance(param, dtensor):
            part = shard_rows(state[name], param)
            if part is None:  # a shard that is not a block of rows (uneven split): cut on the device instead
                param.to_local().copy_(local_shard(state[name], param))
                continue
            sources[name], targets[name] = part, param.to_local()
        else:
            sources[name], targets[name] = state[name], param
    device = next(iter(targets.values())).device if targets else torch.device("cpu")
    for name, moved in bulk_copy.to_device(sources, device):
        targets[name].copy_(moved)


def shard_rows(full: torch.Tensor, param) -> torch.Tensor | None:
    """This process's part of a full CPU tensor as a view (no bytes read yet), or None where the local shard is
    not the plain slice of the global tensor (FSDP2 pads an uneven last shard)."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(full.shape, param.device_mesh, param.placements)
    if tuple(shape) != tuple(param.to_local().shape):
        return None
    return full[tuple(slice(o, o + n) for o, n in zip(offset, shape))]


def local_shard(full: torch.Tensor, param) -> torch.Tensor:
    """This process's part of a full CPU tensor where it is not a plain slice: the whole tensor is distributed."""
    from torch.distributed.tensor import distribute_tensor

    local = param.to_local()
    device = param.device_mesh.device_type
    return distribute_tensor(full.to(device, dtype=param.dtype), param.device_mesh, param.placements,
                             src_data_rank=None).to_local().to(local.device)


@torch.no_grad()
def gather(gpt, main: bool) -> dict:
    """The full state dict on the main process (every process takes part in the all-gathers). Where the main
    GPU has room for it the full tensors stay there and `write` copies them out through pinned memory one at a
    time (13.5 GB: 3.9 s on an H200, against 7.8 s of per-tensor copies into pageable memory before the save);
    else they come to the CPU here."""
    state = gpt.state_dict()
    keep = main and room_on_device(state)
    out = {}
    dtensor = dtensor_class()
    for name, tensor in state.items():
        if isinstance(tensor, dtensor):
            tensor = tensor.full_tensor()
        tensor = converters.plain(tensor)
        if main:
            out[name] = tensor if keep else tensor.to("cpu", non_blocking=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out


def room_on_device(state: dict, margin: float = 0.9) -> bool:
    """Whether the full tensors that a gather would add (sharded ones at their global size) fit in the free
    memory of their GPU, with a margin; False off the GPU."""
    first = next(iter(state.values()), None)
    if first is None or first.device.type != "cuda":
        return False
    extra = sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, dtensor_class()))
    free, _ = torch.cuda.mem_get_info(first.device)
    cached = torch.cuda.memory_reserved(first.device) - torch.cuda.memory_allocated(first.device)
    return extra <= margin * (free + cached)


def write(state: dict, path: Path, fast: bool) -> float:
    """torch.save as stock's Fabric does, to a temporary name then renamed. fast skips the zip records' CRC32
    (torch.load does not check it; computing it took 14.6 of the 18.2 s of a 13.5 GB save on an H200). GPU
    tensors are copied out through pinned memory."""
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    from torch.utils.serialization import config  # torch.save's settings; patch puts them back after

    on_gpu = any(t.device.type == "cuda" for t in state.values())
    with config.patch({"save.compute_crc32": not fast, "save.use_pinned_memory_for_d2h": on_gpu}):
        torch.save({"model": state}, tmp)
    tmp.replace(path)
    return time.perf_counter() - t0


def write_in_background(state: dict, path: Path, fast: bool) -> threading.Thread:
    """`write` in a thread; `joined` waits for it. The path is made absolute first, so that nothing the main thread
    does meanwhile (a library that changes the working directory) can point a relative path at another folder."""
    path = Path(path).absolute()
    result: dict = {"path": path}

    def target() -> None:
        try:
            result["s"] = write(state, path, fast)
        except BaseException as error:  # re-raised by `joined` in the main thread
            result["error"] = error

    thread = threading.Thread(target=target, daemon=False)
    thread.result = result
    thread.start()
    return thread


def joined(thread: threading.Thread) -> float:
    """Wait for a background write; its seconds, or its error raised here, naming the file."""
    thread.join()
    if "error" in thread.result:
        raise RuntimeError(f"writing {thread.result['path']} failed: {thread.result['error']!r}") \
            from thread.result["error"]
    return thread.result["s"]
