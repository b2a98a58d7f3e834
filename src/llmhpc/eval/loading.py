"""Checkpoint and tokenizer for the fast scorer: a LitGPT checkpoint read in part (a pipeline stage's blocks)
straight from the memory-mapped file to the device, several tensors at a time; the BOS decision as
lm-evaluation-harness 0.4.13 makes it (follow the tokenizer); a batch tokenizer equal to LitGPT's per-string
`encode(text, bos=False)`."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

from llmhpc import bulk_copy, litgpt_core
from llmhpc.litgpt_checkpoint import DTYPES


def _wanted(name: str, first: int, last: int, n_layer: int) -> bool:
    if name.startswith("transformer.h."):
        return first <= int(name.split(".")[2]) < last
    if name.startswith("transformer.wte."):
        return first == 0
    return last == n_layer  # final norm and output head


HF_LLAMA = {  # LitGPT name (block i as {}) -> Hugging Face Llama name(s); several are concatenated (q, k, v)
    "transformer.wte.weight": ("model.embed_tokens.weight",),
    "transformer.ln_f.weight": ("model.norm.weight",),
    "lm_head.weight": ("lm_head.weight",),
    "transformer.h.{}.norm_1.weight": ("model.layers.{}.input_layernorm.weight",),
    "transformer.h.{}.norm_2.weight": ("model.layers.{}.post_attention_layernorm.weight",),
    "transformer.h.{}.attn.qkv.weight": tuple(f"model.layers.{{}}.self_attn.{x}_proj.weight" for x in "qkv"),
    "transformer.h.{}.attn.proj.weight": ("model.layers.{}.self_attn.o_proj.weight",),
    "transformer.h.{}.mlp.fc_1.weight": ("model.layers.{}.mlp.gate_proj.weight",),
    "transformer.h.{}.mlp.fc_2.weight": ("model.layers.{}.mlp.up_proj.weight",),
    "transformer.h.{}.mlp.proj.weight": ("model.layers.{}.mlp.down_proj.weight",),
}


SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}


def safetensors_views(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a .safetensors file as a view of the memory-mapped file: no copy and no lock held while
    the pages are read (safetensors' get_tensor copies each tensor into new memory first, which on 1 x H200
    made a 13.5 GB load take 12-17 s instead of ~4). The format: an 8-byte little-endian header length, a JSON
    header {name: {dtype, shape, data_offsets}}, then the data."""
    import mmap
    import struct

    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)  # copy-on-write: writable views, file untouched
    views = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {meta['dtype']}, which this reader does not know")
        dtype = SAFETENSORS_DTYPES[meta["dtype"]]
        begin, end = meta["data_offsets"]
        count = (end - begin) // dtype.itemsize
        flat = torch.frombuffer(mm, dtype=dtype, count=count, offset=8 + n + begin) if count else \
            torch.empty(0, dtype=dtype)
        views[name] = flat.view(meta["shape"])
    return views


def _hf_reader(checkpoint_dir: Path, raw: dict):
    """name -> list of CPU tensors (views of the memory-mapped safetensors files) from a Hugging Face Llama
    checkpoint, LitGPT names asked; q/k/v come as three parts that the caller concatenates (on the device) as
    LitGPT's converter does. `raw` is model_config.yaml as read: a field it lacks takes LitGPT's default, which
    is never the Llama value."""
    if not (raw.get("mlp_class_name") == "LLaMAMLP" and raw.get("norm_class_name") == "RMSNorm"
            and raw.get("bias") is False):
        raise NotImplementedError(f"{checkpoint_dir}: reading Hugging Face weights directly is for Llama shapes")
    index = checkpoint_dir / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
             else ["model.safetensors"])
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(safetensors_views(checkpoint_dir / f))

    def read(name: str) -> list[torch.Tensor]:
        parts = name.split(".")
        block = parts[2] if name.startswith("transformer.h.") else None
        key = ".".join(parts[:2] + ["{}"] + parts[3:]) if block is not None else name
        sources = [s.format(block) for s in HF_LLAMA[key]]
        if name == "lm_head.weight" and sources[0] not in tensors:  # tied embeddings
            sources = ["model.embed_tokens.weight"]
        missing = [s for s in sources if s not in tensors]
        if missing:
            raise KeyError(f"{checkpoint_dir}: the safetensors files have no tensor {missing[0]}")
        return [tensors[s] for s in sources]

    return read


def load_model_part(checkpoint_dir: Path, precision: str | None, device, first_block: int = 0,
                    last_block: int | None = None, threads: int = 8):
    """LitGPT's GPT with only blocks [first_block, last_block) (plus the embedding on the first stage, the final
    norm and head on the last) on `device`; everything else stays on the meta device and is never used.
    Weights come from lit_model.pth (memory-mapped), or, for Llama shapes, straight from a Hugging Face
    checkpoint's safetensors files when the directory has those and a model_config.yaml instead.
    The weights travel in a thread (batched copies, `threads` of them filling the pinned buffers) while this one
    imports LitGPT's model code and builds the model on the meta device. Returns (model, parameter count of the whole model)."""
    checkpoint_dir = Path(checkpoint_dir)
    raw = yaml.safe_load((checkpoint_dir / "model_config.yaml").read_text())
    if not raw:
        raise ValueError(f"{checkpoint_dir / 'model_config.yaml'} is empty")
    last = raw["n_layer"] if last_block is None else last_block
    names, read = open_weights(checkpoint_dir, raw, first_block, last)
    dtype = DTYPES[precision] if precision else None

    with ThreadPoolExecutor(1) as pool:
        moving = pool.submit(_to_device, names, read, device, dtype, threads)
        litgpt_core.load()
        from litgpt import Config

        config = Config(**raw)  # as Config.from_file makes it, from the YAML read above
        model = litgpt_core.meta_gpt(config)  # its RoPE cache is made on the device below
        expected = {k for k in model.state_dict() if _wanted(k, first_block, last, config.n_layer)}
        if expected != set(names):
            missing, unexpected = sorted(expected - set(names)), sorted(set(names) - expected)
            raise KeyError(f"{checkpoint_dir}: the weights do not match model_config.yaml's model: missing "
                           f"{missing[:5]}, unexpected {unexpected[:5]}")
        part = moving.result()
    n_params = sum(p.numel() for p in model.parameters())
    model.load_state_dict(part, strict=False, assign=True)
    cos, sin = model.rope_cache(device=torch.device(device))
    rope_dtype = dtype or next(iter(part.values())).dtype
    model.cos, model.sin = cos.to(rope_dtype), sin.to(rope_dtype)
    model.max_seq_length = config.block_size
    return model.eval(), n_params


def _to_device(names: list[str], read, device, dtype, threads: int) -> dict[str, torch.Tensor]:
    """The named tensors on `device` in `dtype` (floating point ones), through llmhpc.bulk_copy's batched
    copies; a name read as several parts (Hugging Face q, k, v) is concatenated on the device."""
    sources, parts = {}, {}
    for name in names:
        got = read(name)
        got = got if isinstance(got, list) else [got]
        parts[name] = [f"{name}#{i}" for i in range(len(got))]
        sources.update(zip(parts[name], got))
    moved = dict(bulk_copy.to_device(sources, device, threads=threads))
    out = {}
    for name, keys in parts.items():
        t = moved.pop(keys[0]) if len(keys) == 1 else torch.cat([moved.pop(k) for k in keys])
        out[name] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return out


def open_weights(checkpoint_dir: Path, raw: dict, first: int, last: int) -> tuple[list[str], object]:
    """(the LitGPT names this part needs, name -> CPU tensor(s)) without importing LitGPT: lit_model.pth's own
    keys, or a Hugging Face Llama checkpoint's tensors under LitGPT's names."""
    n_layer = raw["n_layer"]
    if (checkpoint_dir / "lit_model.pth").is_file():
        state = torch.load(checkpoint_dir / "lit_model.pth", mmap=True, weights_only=True, map_location="cpu")
        state = state.get("model", state)
        return [k for k in state if _wanted(k, first, last, n_layer)], state.__getitem__
    every = [k.format(i) for k in HF_LLAMA for i in (range(n_layer) if "{}" in k else [None])]
    return [k for k in every if _wanted(k, first, last, n_layer)], _hf_reader(checkpoint_dir, raw)


def load_tokenizer(checkpoint_dir: Path):
    litgpt_core.load()
    from litgpt import Tokenizer

    return Tokenizer(Path(checkpoint_dir))


def resolve_bos(tokenizer, checkpoint_dir: Path, mode: str = "auto") -> tuple[int | None, str]:
    """(BOS id to prepend or None, why). auto follows the tokenizer as lm-eval's HF model does (it leaves
    add_bos_token unset): tokenizer_config.json's add_bos_token when present, else whether the tokenizer's own
    encoding starts with BOS (Llama-2's adds it), else LitGPT's reading of the tokenizer class."""
    if mode not in ("auto", "true", "false"):
        raise ValueError(f"bos must be auto, true or false, not {mode!r}")
    bos_id = tokenizer.bos_id
    if mode == "false":
        return None, "bos=false"
    if mode == "true":
        if bos_id is None:
            raise ValueError(f"bos=true but the tokenizer in {checkpoint_dir} has no BOS token")
        return bos_id, "bos=true"
    cfg_path = Path(checkpoint_dir) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    if "add_bos_token" in cfg:
        use, why = bool(cfg["add_bos_token"]), "tokenizer_config.json add_bos_token"
    elif tokenizer.backend == "huggingface":
        ids = tokenizer.processor.encode("a").ids
        use, why = bool(ids) and ids[0] == bos_id, "tokenizer.json's encoding"
    else:
        use, why = bool(tokenizer.use_bos), "tokenizer class"
    if use and bos_id is None:
        raise ValueError(f"the tokenizer in {checkpoint_dir} asks for BOS but has no BOS token")
    return (bos_id if use else None), f"auto: {why} -> {'BOS' if use else 'no BOS'}"


def batch_encoder(tokenizer):
    """list[str] -> list[list[int]], the same tokens as tokenizer.encode(text, bos=False).tolist() each: a
    leading BOS and a trailing EOS that the processor adds are dropped. The Hugging Face backend encodes the
    whole list in one call (parallel, outside the GIL)."""
    if tokenizer.backend != "huggingface":
        return lambda texts: [tokenizer.encode(t, bos=False).tolist() for t in texts]
    proc, bos, eos = tokenizer.processor, tokenizer.bos_id, tokenizer.eos_id

    def encode_batch(texts: list[str]) -> list[list[int]]:
        out = []
        for enc in proc.encode_batch(texts):
            ids = enc.ids
            if ids and ids[0] == bos:
                ids = ids[1:]
            if ids and ids[-1] == eos:
                ids = ids[:-1]
            out.append(ids)
        return out

    return encode_batch
