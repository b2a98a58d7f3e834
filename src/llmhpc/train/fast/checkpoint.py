"""Loading `checkpoint_dir/lit_model.pth` into the (sharded) model, and writing what stock writes to
`out_dir/final`: lit_model.pth ({"model": state dict}, as Fabric saves it), the model and tokenizer files,
hyperparameters.yaml and prompt_style.yaml."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import torch
import yaml
from torch.distributed.tensor import DTensor, distribute_tensor

from llmhpc import bulk_copy
from llmhpc.train.fast import converters


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
    for name, param in params.items():
        if isinstance(param, DTensor):
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


def shard_rows(full: torch.Tensor, param: DTensor) -> torch.Tensor | None:
    """This process's part of a full CPU tensor as a view (no bytes read yet), or None where the local shard is
    not the plain slice of the global tensor (FSDP2 pads an uneven last shard)."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(full.shape, param.device_mesh, param.placements)
    if tuple(shape) != tuple(param.to_local().shape):
        return None
    return full[tuple(slice(o, o + n) for o, n in zip(offset, shape))]


def local_shard(full: torch.Tensor, param: DTensor) -> torch.Tensor:
    """This process's part of a full CPU tensor where it is not a plain slice: the whole tensor is distributed."""
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
    for name, tensor in state.items():
        if isinstance(tensor, DTensor):
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
    extra = sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, DTensor))
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
    """`write` in a thread; `joined` waits for it. The path is made absolute first: the main thread goes on to
    litgpt's save_hyperparameters, whose jsonargparse changes the working directory while it parses (a relative
    path would name another folder halfway through a write)."""
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


def side_files(run, final_dir: Path) -> None:
    """Stock's companions of lit_model.pth: config and tokenizer files, hyperparameters, prompt style."""
    from litgpt.prompts import save_prompt_style
    from litgpt.utils import copy_config_files

    final_dir.mkdir(parents=True, exist_ok=True)
    copy_config_files(Path(run.checkpoint_dir), final_dir)
    save_prompt_style(run.data.prompt_style, final_dir)
    save_hyperparameters(run.litgpt_yaml, final_dir)


def save_hyperparameters(litgpt_yaml: dict, final_dir: Path) -> None:
    """litgpt's save_hyperparameters over the YAML without `engine:` (what `litgpt finetune_full` would have
    been given), so the file is exactly stock's; a plain copy of that YAML where jsonargparse is missing."""
    stripped = final_dir / "finetune_config.yaml"
    stripped.write_text(yaml.safe_dump(litgpt_yaml, sort_keys=False))
    try:  # finetune_lora's setup where the YAML has its lora_* keys (full's would refuse them)
        if any(key.startswith("lora_") for key in litgpt_yaml):
            import inspect

            from litgpt.finetune.lora import setup

            taken = inspect.signature(setup).parameters  # finetune_lora has no `resume`
            stripped.write_text(yaml.safe_dump({k: v for k, v in litgpt_yaml.items() if k in taken}, sort_keys=False))
        else:
            from litgpt.finetune.full import setup
        from litgpt.parser_config import save_hyperparameters as litgpt_save
    except ImportError:
        (final_dir / "hyperparameters.yaml").write_text(stripped.read_text())
        return
    argv = sys.argv
    sys.argv = [argv[0], "--config", str(stripped)]
    try:
        litgpt_save(setup, final_dir)
    except Exception as exc:  # noqa: BLE001 - a plain copy beats no record
        print(f"hyperparameters.yaml: litgpt's writer failed ({exc}); writing the YAML as given")
        (final_dir / "hyperparameters.yaml").write_text(stripped.read_text())
    finally:
        sys.argv = argv
        stripped.unlink()
