"""LoRA, DoRA and QLoRA on LitGPT's GPT: the adapted Linear layer, where adapters go, their initial values, the
frozen base (NF4 for qlora) and the merge into full weights at save.

An adapted layer keeps the base layer's `weight` and `bias` under their own names (the checkpoint loads as is)
and adds litgpt's `lora_A` (r x n_slices, in) and `lora_B` (rows of the adapted slices, r), the layout of
`litgpt.lora.LoRAQKVLinear`, so `lit_model.pth.lora` holds the tensors stock `litgpt finetune_lora` saves. The fused
qkv weight takes one adapter per enabled slice (query, key, value), as litgpt's and as peft's on separate
q/k/v projections. DoRA (peft's `DoraLinearLayer`, Liu et al. 2024) adds `lora_magnitude`, one entry per adapted
output row: W' = m * (W0 + s B A) / ||W0 + s B A|| with the norm over each output row (peft's dim=1) and
detached from the graph, as peft does (section 4.3 of the paper).

litgpt.lora itself is not used: its GPT renames the base weights (`qkv.linear.weight`), has no DoRA, and its
zero-padded conv1d path for partial qkv is slower than one block-structured matmul.

QLoRA's base is torchao's NF4 (not bitsandbytes): it runs on CPU (the tests), needs no `bitsandbytes < 0.50` pin
as litgpt's bnb path does, and is a plain tensor subclass that works on any number of GPUs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NF4_BLOCK = 64  # torchao's NF4 block: one absmax scale per 64 weights


class AdaptedLinear(nn.Module):
    """A Linear layer (weight and bias frozen) plus a low-rank update on the output rows of `slices`.

    `slices` are (first row, rows) of the base weight's output, each with its own rank-r adapter; rows outside
    them are unchanged."""

    def __init__(self, base: nn.Linear, slices: list[tuple[int, int]], r: int, alpha: float, dropout: float,
                 dora: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.slices, self.r, self.scaling = tuple(slices), r, alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        rows = sum(n for _, n in slices)
        self.lora_A = nn.Parameter(torch.empty(r * len(slices), self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(rows, r, **factory))
        self.lora_magnitude = nn.Parameter(torch.empty(rows, **factory)) if dora else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def extra_repr(self) -> str:
        kind = "dora" if self.lora_magnitude is not None else "lora"
        return f"{self.in_features}, {self.out_features}, {kind} r={self.r} slices={self.slices}"

    def full_B(self) -> torch.Tensor:
        """(out_features, r x n_slices): each slice's B in its rows and its adapter's columns, zeros elsewhere."""
        return block_B(self.lora_B, self.slices, self.out_features, self.r)

    def delta_weight(self) -> torch.Tensor:
        return (self.full_B() @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        h = self.dropout(x)
        lora = F.linear(F.linear(h, self.lora_A), self.full_B()) * self.scaling
        if self.lora_magnitude is None:
            return F.linear(x, weight, self.bias) + lora
        # DoRA as peft computes it: base + (m/||W'|| - 1) base(dropout(x)) + m/||W'|| lora, bias apart
        with torch.no_grad():
            norm = row_norm(dequantised(weight), self.delta_weight().detach()).to(x.dtype)
        scale = magnitude_rows(self.lora_magnitude, norm, self.slices) / norm
        base = F.linear(x, weight)
        if isinstance(self.dropout, nn.Identity) or not self.training:
            # the same sum without dropout, written so that backward keeps one tensor (base + lora), not two
            out = scale * (base + lora)
        else:  # dropout: the scaled base term sees the dropped-out input, a second matmul (peft and the paper)
            out = base + (scale - 1) * F.linear(h, weight) + scale * lora
        return out if self.bias is None else out + self.bias


def block_B(lora_B: torch.Tensor, slices, out_features: int, r: int) -> torch.Tensor:
    if len(slices) == 1 and slices[0] == (0, out_features):
        return lora_B
    n, pieces, row, offset = len(slices), [], 0, 0
    for i, (first, rows) in enumerate(slices):
        if first > row:
            pieces.append(lora_B.new_zeros(first - row, n * r))
        pieces.append(F.pad(lora_B[offset:offset + rows], (i * r, (n - 1 - i) * r)))
        row, offset = first + rows, offset + rows
    if row < out_features:
        pieces.append(lora_B.new_zeros(out_features - row, n * r))
    return torch.cat(pieces)


def magnitude_rows(magnitude: torch.Tensor, norm: torch.Tensor, slices) -> torch.Tensor:
    """The magnitude of every output row: the trained one on adapted rows, the row's own norm elsewhere (so that
    their scale m / ||W|| is exactly 1)."""
    if len(slices) == 1 and slices[0] == (0, norm.numel()):
        return magnitude
    pieces, row, offset = [], 0, 0
    for first, rows in slices:
        pieces += [norm[row:first], magnitude[offset:offset + rows]]
        row, offset = first + rows, offset + rows
    return torch.cat(pieces + [norm[row:]])


def row_norm(weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """||W0 + delta|| over each output row (peft's `torch.linalg.norm(weight, dim=1)`), in float32."""
    return torch.linalg.vector_norm(weight.float() + delta.float(), dim=1)


def dequantised(weight: torch.Tensor) -> torch.Tensor:
    return weight.get_original_weight() if hasattr(weight, "get_original_weight") else weight


def target_slices(name: str, module: nn.Module, config, lora) -> list[tuple[int, int]]:
    """The output rows of `name` that `litgpt finetune_lora`'s flags adapt (none: the layer stays plain)."""
    out = module.out_features
    if name == "lm_head":
        return [(0, out)] if lora.head else []
    if name.endswith("attn.qkv"):
        q, kv = config.n_head * config.head_size, config.n_query_groups * config.head_size
        parts = ((0, q, lora.query), (q, kv, lora.key), (q + kv, kv, lora.value))
        return [(first, rows) for first, rows, on in parts if on]
    if name.endswith("attn.proj"):
        return [(0, out)] if lora.projection else []
    if ".mlp." in name:
        return [(0, out)] if lora.mlp else []
    return []


def attach(gpt, config, lora, method: str) -> int:
    """Freeze every parameter and put adapters on the targeted Linear layers (on the meta device, before
    sharding). Returns the number of adapted layers."""
    if method == "full":
        return 0
    if any(".experts." in name for name, _ in gpt.named_modules()):
        raise ValueError(f"engine.method {method}: mixture-of-experts MLPs are not supported")
    for p in gpt.parameters():
        p.requires_grad_(False)
    adapted = 0
    for name, module in list(gpt.named_modules()):
        if type(module) is not nn.Linear:
            continue
        slices = target_slices(name, module, config, lora)
        if slices:
            parent, _, child = name.rpartition(".")
            owner = gpt.get_submodule(parent) if parent else gpt
            setattr(owner, child, AdaptedLinear(module, slices, lora.r, lora.alpha, lora.dropout, method == "dora"))
            adapted += 1
    return adapted


def adapted_layers(gpt) -> dict[str, AdaptedLinear]:
    return {name: m for name, m in gpt.named_modules() if isinstance(m, AdaptedLinear)}


@torch.no_grad()
def initial_state(gpt, state: dict, seed: int, device: torch.device) -> dict:
    """The checkpoint's tensors plus the adapters' initial values (full, on the CPU, the same on every process):
    A as litgpt and peft draw it (kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in))), B zero
    (so training starts from the base model exactly), DoRA's magnitude the base weight's row norms."""
    layers = adapted_layers(gpt)
    if not layers:
        return state
    generator = torch.Generator().manual_seed(seed)
    out = dict(state)
    for name, layer in layers.items():
        bound = 1 / math.sqrt(layer.in_features)
        out[f"{name}.lora_A"] = torch.empty(layer.lora_A.shape).uniform_(-bound, bound, generator=generator)
        out[f"{name}.lora_B"] = torch.zeros(layer.lora_B.shape)
        if layer.lora_magnitude is not None:
            norms = torch.linalg.vector_norm(state[f"{name}.weight"].to(device, torch.float32), dim=1).cpu()
            out[f"{name}.lora_magnitude"] = torch.cat([norms[first:first + rows] for first, rows in layer.slices])
    return out


def nf4_scaler_block(numel: int) -> int | None:
    """torchao's NF4 quantises its per-block scales again in blocks (256 by default) that must divide the
    number of blocks; a smaller power of two where 256 does not (small test models). None: not quantisable."""
    if numel % NF4_BLOCK:
        return None
    blocks = numel // NF4_BLOCK
    size = 256
    while size > 1 and blocks % size:
        size //= 2
    return size


@torch.no_grad()
def quantise_base(gpt) -> int:
    """qlora: every frozen Linear weight of the transformer blocks becomes an NF4 tensor (about 0.5 byte a weight);
    embeddings, norms and lm_head stay in the training dtype. Returns the number of quantised weights."""
    from torchao.quantization import to_nf4

    done = 0
    for module in gpt.transformer.h.modules():
        if not isinstance(module, (nn.Linear, AdaptedLinear)) or module.weight.requires_grad:
            continue
        scaler = nf4_scaler_block(module.weight.numel())
        if scaler is None:
            continue
        module.weight = nn.Parameter(to_nf4(module.weight.detach(), NF4_BLOCK, scaler), requires_grad=False)
        done += 1
    return done


@torch.no_grad()
def dequantise_base(gpt) -> None:
    """Back to plain weights (in the dtype NF4 computes in) before the final gather, so the merge sees tensors."""
    for module in gpt.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and hasattr(weight, "get_original_weight"):
            module.weight = nn.Parameter(weight.get_original_weight(), requires_grad=False)


def ignore_frozen_in_ddp(trainee) -> None:
    """DDP broadcasts every parameter from rank 0 at start; the frozen base is read from the same checkpoint on
    every process (and NF4 tensors do not broadcast), so only the adapters take part."""
    from torch.nn.parallel import DistributedDataParallel

    frozen = [name for name, p in trainee.named_parameters() if not p.requires_grad]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(trainee, frozen)


@torch.no_grad()
def merge_state(full: dict, slices_of: dict, lora, device: torch.device) -> tuple[dict, dict]:
    """(merged weights under the base model's names, the adapter tensors) from the gathered full state dict.
    The merge runs on `device` in float32 and returns the base dtype."""
    adapter_keys = [k for k in full if k.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "lora_magnitude")]
    adapters = {k: full[k] for k in adapter_keys}
    merged = {k: v for k, v in full.items() if k not in adapters}
    scaling = lora.alpha / lora.r
    for name, slices in slices_of.items():
        base = merged[f"{name}.weight"]
        weight = base.to(device, torch.float32, copy=True)  # never the live parameter (one CPU process)
        A, B = (adapters[f"{name}.{k}"].to(device, torch.float32) for k in ("lora_A", "lora_B"))
        weight += block_B(B, slices, weight.shape[0], lora.r) @ A * scaling
        if f"{name}.lora_magnitude" in adapters:
            norm = torch.linalg.vector_norm(weight, dim=1)
            magnitude = adapters[f"{name}.lora_magnitude"].to(device, torch.float32)
            weight *= (magnitude_rows(magnitude, norm, slices) / norm)[:, None]
        merged[f"{name}.weight"] = weight.to(base.device, base.dtype)
    return merged, adapters


def parameter_counts(module) -> tuple[int, int]:
    """(trainable, frozen) as `litgpt finetune_lora` prints them (an NF4 weight counts its original elements)."""
    trainable = frozen = 0
    for p in module.parameters():
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen
