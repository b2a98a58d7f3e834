"""Memory per GPU of a fine-tune on the fsdp2 engine, from the model's shape and the settings, without torch.

One estimate for two users: the engine plans its layout with it (sharding, activation checkpointing, rows per
micro batch) and prints the peak it predicts for the rows it will run, which the summary puts beside the
measured peak; the preflight prints it for every fsdp2 experiment and refuses, before anything is queued, one
that cannot fit even with activation checkpointing and one row per micro batch.

The model's shape comes from LitGPT's own architecture table (`litgpt/config.py`, by name) or from a converted
checkpoint's model_config.yaml. The table's file is read on its own: importing the `litgpt` package imports
Lightning, 10-15 s, which the workflow's parse must not pay.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

PARAM_BYTES = {"bf16-true": 2, "16-true": 2, "32-true": 4, "bf16-mixed": 4, "16-mixed": 4}  # weights' dtype
GB = 1e9

# Memory per GPU by name, for sites that do not set site.gpu_memory_gb; most specific first (decimal GB, as
# nvidia-smi's MiB x 1.048576 rounds). A V100 or A100 without its size in the name is taken at its smaller size.
GPU_MEMORY_GB = [
    (r"\bGH200\b", 96), (r"\bH200\b", 141), (r"\bH100\b.*\bNVL\b", 94), (r"\bH100\b", 80), (r"\bH800\b", 80),
    (r"\bB200\b", 180), (r"\bA100\b.*80", 80), (r"\bA100\b", 40), (r"\bV100\b.*32", 32), (r"\bV100\b", 16),
    (r"\bL40S?\b", 48), (r"\bA40\b", 48), (r"\bL4\b", 24), (r"\bT4\b", 16),
]


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a LitGPT model config."""

    n_layer: int
    n_embd: int
    intermediate_size: int
    padded_vocab_size: int
    n_params: int


def _litgpt_configs():
    """LitGPT's `config.py` module, loaded from its file without the package (see the module's docstring)."""
    name = "_llmhpc_litgpt_config"
    if name not in sys.modules:
        spec = importlib.util.find_spec("litgpt")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError("litgpt is not installed")
        path = Path(list(spec.submodule_search_locations)[0]) / "config.py"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    return sys.modules[name]


def shape_of(model_name: str | None = None, config_file: str | Path | None = None) -> Shape:
    """The shape of LitGPT's architecture `model_name`, or of a checkpoint's model_config.yaml."""
    configs = _litgpt_configs()
    if config_file is not None:
        import yaml

        with open(config_file) as fh:
            config = configs.Config(**yaml.safe_load(fh))
    else:
        config = configs.Config.from_name(model_name)
    return Shape(config.n_layer, config.n_embd, config.intermediate_size, config.padded_vocab_size,
                 count_parameters(config))


def count_parameters(config) -> int:
    """Parameters of LitGPT's GPT for `config`, counted from its layer shapes (a test checks it against the model
    built on the meta device): embedding, blocks (attention, MLP, norms), final norm, head."""
    d, head, n_head, groups = config.n_embd, config.head_size, config.n_head, config.n_query_groups
    qkv = (n_head + 2 * groups) * head
    attention = d * qkv + n_head * head * d + (qkv + d if config.bias else 0)
    if getattr(config, "attn_bias", False) and not config.bias:
        attention += qkv
    if config.norm_qk:
        attention += 2 * head
    mlp_name = config.mlp_class_name
    inter = config.intermediate_size
    if mlp_name == "GptNeoxMLP":
        mlp = 2 * d * inter + ((inter + d) if config.bias else 0)
    elif mlp_name in ("LLaMAMLP", "GemmaMLP"):
        mlp = 3 * d * inter + ((2 * inter + d) if config.bias else 0)
    else:
        raise ValueError(f"model {config.name!r}: MLP {mlp_name} is not one the memory estimate knows")
    norm = d * (2 if config.norm_class_name == "LayerNorm" else 1)  # torch's LayerNorm has a bias whatever config.bias
    norms_per_block = 2 if not config.shared_attention_norm else 1
    if getattr(config, "post_attention_norm", False):
        norms_per_block += 1
    if getattr(config, "post_mlp_norm", False):
        norms_per_block += 1
    block = attention + mlp + norms_per_block * norm
    embedding = config.padded_vocab_size * d
    head_params = config.padded_vocab_size * d + (config.padded_vocab_size if config.lm_head_bias else 0)
    return embedding + config.n_layer * block + norm + head_params


def gpu_memory_gb(gpu: str | None, site_value: float | None = None) -> float | None:
    """Memory of one GPU: the site's gpu_memory_gb, else by the GPU's name, else None (unknown)."""
    if site_value:
        return float(site_value)
    for pattern, size in GPU_MEMORY_GB:
        if gpu and re.search(pattern, gpu, re.IGNORECASE):
            return float(size)
    return None


def activation_bytes_per_token(shape, precision: str, checkpointing: bool, method: str = "full") -> float:
    """Activation memory one token holds for backward, over all layers (an estimate, on the high side):
    per layer about 10 n_embd + 4 intermediate values without checkpointing, the block input with it (plus one
    block's worth recomputed at a time). DoRA also keeps each adapted layer's output (for its magnitude's
    gradient): at most 5 n_embd + 2 intermediate more."""
    size = 2 if precision != "32-true" else 4
    per_layer = 10 * shape.n_embd + 4 * shape.intermediate_size
    if method == "dora":
        per_layer += 5 * shape.n_embd + 2 * shape.intermediate_size
    if checkpointing:
        return size * (shape.n_layer * shape.n_embd + per_layer)
    return size * shape.n_layer * per_layer


def static_bytes(n_params: int, precision: str, sharding: str, shards: int, method: str = "full",
                 accumulating: bool = True) -> float:
    """Parameters, gradients and AdamW's two states per GPU. grad_op and hybrid do not reshard after forward, so
    the whole model stays gathered from forward to backward; gradient accumulation without synchronisation
    (`accumulating`: more than one micro batch a step) keeps whole gradients too. Adapter methods hold the frozen
    weights only (adapters are a fraction of a percent), NF4 at about half a byte a weight plus the bf16 rest."""
    size = PARAM_BYTES[precision]
    copies = 4 if method == "full" else 1
    if method == "qlora":
        size = 1
    per_gpu = copies * n_params * size / (shards if sharding != "none" else 1)
    if sharding in ("grad_op", "hybrid") and shards > 1:
        per_gpu += (2 if accumulating else 1) * n_params * size
    return per_gpu


def row_bytes(shape, precision: str, checkpointing: bool, method: str, row_len: int) -> float:
    """One packed row of row_len tokens: its activations and its share of the loss head's chunks."""
    logits = row_len * 4 * shape.padded_vocab_size / 8  # the loss head's chunks, spread over the row
    return row_len * activation_bytes_per_token(shape, precision, checkpointing, method) + logits


def plan_memory(shape, n_params: int, precision: str, sharding: str, shards: int, row_len: int,
                total_bytes: float, fraction: float, choice: str, method: str = "full",
                min_rows: int = 1) -> tuple[bool, int]:
    """(activation checkpointing on?, largest rows per micro batch) from the memory estimate. Checkpointing
    stays off whenever `min_rows` rows fit without it (recomputing costs about a third more compute): one packed
    row, or stock's micro batch when packing is off."""
    free = total_bytes * fraction - static_bytes(n_params, precision, sharding, shards, method)
    rows = {ac: int(free // row_bytes(shape, precision, ac, method, row_len)) for ac in (False, True)}
    checkpointing = choice == "on" or (choice == "auto" and rows[False] < min_rows)
    return checkpointing, max(1, min(64, rows[checkpointing]))


def resolve_sharding(choice: str, method: str, size: int, nodes: int, frozen_bytes: float,
                     gpu_bytes: float) -> str:
    """The sharding `choice` resolves to for `size` processes on `nodes` nodes. Full fine-tunes: auto is
    grad_op on one node and hybrid (shard within a node, replicate across nodes) on several (choose_sharding
    falls back to full where those do not fit). Adapter methods: auto replicates the frozen base on every GPU
    (DDP over the adapters alone: no weight all-gathers) where it takes at most half of a GPU, and shards it
    with FSDP2 otherwise; qlora's NF4 base is always replicated."""
    if size == 1:
        return "none"
    if method == "qlora":
        if choice not in ("auto", "none"):
            raise ValueError(f"engine.sharding: {choice} with method qlora; its NF4 base is replicated (sharding: "
                             "none or auto)")
        return "none"
    if method != "full" and choice == "auto" and frozen_bytes <= gpu_bytes / 2:
        return "none"
    if choice == "auto":
        return "hybrid" if nodes > 1 else "grad_op"
    if choice == "hybrid" and nodes == 1:
        return "grad_op"  # one node: hybrid sharding is plain sharding without resharding
    return choice


def choose_sharding(shape, n_params: int, precision: str, method: str, choice: str, size: int, nodes: int,
                    gpu_bytes: float, fraction: float, row_len: int) -> str:
    """resolve_sharding, and for auto, full sharding (resharded after forward, over every GPU) where grad_op or
    hybrid would not fit one row with activation checkpointing: a 7B full fine-tune in 16-mixed on 4 x 32 GB
    V100s per node holds 27 GB of sharded weights, gradients and states and would gather 27 GB more."""
    sharding = resolve_sharding(choice, method, size, nodes, n_params * PARAM_BYTES[precision], gpu_bytes)
    if choice != "auto" or sharding not in ("grad_op", "hybrid"):
        return sharding
    need = static_bytes(n_params, precision, sharding, shards(sharding, size, nodes), method)
    need += row_bytes(shape, precision, True, method, row_len)
    return sharding if need <= gpu_bytes * fraction else "full"


def shards(sharding: str, size: int, nodes: int) -> int:
    """Over how many GPUs parameters, gradients and optimizer states are split."""
    if sharding == "none" or size == 1:
        return 1
    return size // nodes if sharding == "hybrid" else size


@dataclass(frozen=True)
class Prediction:
    sharding: str
    checkpointing: bool
    rows: int  # rows per micro batch the prediction is for
    row_len: int
    static_gb: float
    activations_gb: float
    gpu_gb: float
    fits: bool

    @property
    def peak_gb(self) -> float:
        return self.static_gb + self.activations_gb

    def describe(self) -> str:
        return (f"{self.peak_gb:.1f} GB of {self.gpu_gb:g} GB per GPU ({self.sharding} sharding: weights, gradients "
                f"and optimizer {self.static_gb:.1f} GB; activations {self.activations_gb:.1f} GB for {self.rows} "
                f"row(s) of {self.row_len} tokens, checkpointing {'on' if self.checkpointing else 'off'})")


def predict(shape: Shape, *, precision: str, method: str, devices: int, num_nodes: int, sharding: str,
            checkpointing: str, micro_rows: int | str, fraction: float, row_len: int, rows_needed: int,
            gpu_gb: float, packing: bool = True, micro_batch_size: int = 1) -> Prediction:
    """The peak per GPU of the layout the engine would choose: its sharding, its checkpointing and the rows per
    micro batch it would run: packed, at most `rows_needed` (a step's rows per process) and micro_rows (auto: as
    many as fit); unpacked, stock's micro_batch_size samples padded to at most row_len. `fits` is False when the
    rows asked for (micro_rows or micro_batch_size; one row for auto) do not fit in `fraction` of the GPU."""
    size, total = devices * num_nodes, gpu_gb * GB
    resolved = choose_sharding(shape, shape.n_params, precision, method, sharding, size, num_nodes, total,
                               fraction, row_len)
    split = shards(resolved, size, num_nodes)
    ac, capacity = plan_memory(shape, shape.n_params, precision, resolved, split, row_len, total, fraction,
                               checkpointing, method, 1 if packing else micro_batch_size)
    if packing:
        asked = capacity if micro_rows == "auto" else int(micro_rows)
        rows = max(1, min(asked, rows_needed))
    else:
        rows = micro_batch_size
    static = static_bytes(shape.n_params, precision, resolved, split, method, accumulating=rows_needed > rows)
    per_row = row_bytes(shape, precision, ac, method, row_len)
    if packing and micro_rows == "auto":  # the engine fits its rows to the memory: one row must fit
        need = static_bytes(shape.n_params, precision, resolved, split, method) + per_row
    else:
        need = static + rows * per_row
    return Prediction(resolved, ac, rows, row_len, static / GB, rows * per_row / GB, gpu_gb, need <= total * fraction)
