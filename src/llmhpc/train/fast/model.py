"""LitGPT's own GPT, trained on packed rows: positions per token, a document mask, and a loss head that never
holds the full logits. The parameters, their names and the blocks' code are LitGPT's; only the order of calls
(the body of `GPT.forward` without its KV-cache branch) is written out here, so that RoPE can take per-token
positions and the blocks a packed mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

PARAM_DTYPES = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "32-true": torch.float32,
                "bf16-mixed": torch.float32, "16-mixed": torch.float32}
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
CHUNK_TOKENS = 4096  # tokens per lm_head + cross-entropy chunk on the chunked path


class Trainee(nn.Module):
    """Wraps the GPT so that one module call runs embedding, blocks and loss (FSDP2 gathers the root parameters
    in this module's forward). Returns the sum over tokens of weight x cross-entropy."""

    def __init__(self, gpt, checkpointing: bool, cross_entropy: str, ignore_index: int) -> None:
        super().__init__()
        self.gpt = gpt
        self.checkpointing = checkpointing
        self.ignore_index = ignore_index
        self.fused = None
        if cross_entropy == "fused":
            from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

            self.fused = LigerFusedLinearCrossEntropyLoss(
                ignore_index=ignore_index, reduction="none", softcap=gpt.config.final_logit_softcapping)

    def forward(self, input_ids, positions, mask, targets, weights) -> torch.Tensor:
        gpt = self.gpt
        cos, sin = gpt.cos[positions], gpt.sin[positions]  # (B, T, rope_n_elem): RoPE restarts in every sample
        x = gpt.transformer.wte(input_ids)
        if gpt.config.scale_embeddings:
            x = x * torch.tensor(gpt.config.n_embd**0.5, dtype=x.dtype)
        for block in gpt.transformer.h:
            if self.checkpointing:
                x = checkpoint(block, x, cos, sin, mask, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask)
        x = gpt.transformer.ln_f(x)
        return self.loss(x.reshape(-1, x.size(-1)), targets.reshape(-1), weights.reshape(-1))

    def loss(self, hidden, targets, weights) -> torch.Tensor:
        head = self.gpt.lm_head
        if self.fused is not None:
            ce = self.fused(head.weight, hidden, targets, head.bias)
            return (ce.float() * weights).sum()
        total = hidden.new_zeros((), dtype=torch.float32)
        for h, t, w in zip(hidden.split(CHUNK_TOKENS), targets.split(CHUNK_TOKENS), weights.split(CHUNK_TOKENS)):
            # recomputed in backward: only one chunk's logits are ever held
            total = total + checkpoint(self._chunk, h, t, w, use_reentrant=False)
        return total

    def _chunk(self, h, t, w):
        logits = self.gpt.lm_head(h)
        cap = self.gpt.config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        ce = F.cross_entropy(logits.float(), t, ignore_index=self.ignore_index, reduction="none")
        return (ce * w).sum()


def build(config, precision: str, device: torch.device):
    """The GPT on the meta device in the parameter dtype (materialised after sharding)."""
    from litgpt import GPT

    if config.rope_indices is not None:
        raise ValueError(f"{config.name}: per-block RoPE indices are not supported by the fast engine")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(PARAM_DTYPES[precision])
    try:
        with torch.device("meta"):
            gpt = GPT(config)
    finally:
        torch.set_default_dtype(previous)
    return gpt


def rope(gpt, max_seq_length: int, precision: str, device: torch.device) -> None:
    """Set the RoPE cache (non-persistent buffers) on the device; stock converts it to the dtype of '-true'
    precisions with the rest of the module, so this does too."""
    gpt._max_seq_length = max_seq_length
    cos, sin = gpt.rope_cache(device=device)
    if precision.endswith("-true"):
        cos, sin = cos.to(PARAM_DTYPES[precision]), sin.to(PARAM_DTYPES[precision])
    gpt.cos, gpt.sin = cos, sin


def n_parameters(gpt) -> int:
    return sum(p.numel() for p in gpt.parameters())


def activation_bytes_per_token(config, precision: str, checkpointing: bool, method: str = "full") -> float:
    """Activation memory one token holds for backward, over all layers (an estimate, on the high side):
    per layer about 10 n_embd + 4 intermediate values without checkpointing, the block input with it (plus one
    block's worth recomputed at a time). DoRA also keeps each adapted layer's output (for its magnitude's
    gradient): at most 5 n_embd + 2 intermediate more."""
    size = 2 if precision != "32-true" else 4
    per_layer = 10 * config.n_embd + 4 * config.intermediate_size
    if method == "dora":
        per_layer += 5 * config.n_embd + 2 * config.intermediate_size
    if checkpointing:
        return size * (config.n_layer * config.n_embd + per_layer)
    return size * config.n_layer * per_layer


def static_bytes(n_params: int, precision: str, sharding: str, shards: int, method: str = "full") -> float:
    """Parameters, gradients and AdamW's two states per GPU; grad_op also keeps the whole model gathered, and
    gradient accumulation without synchronisation keeps whole gradients. Adapter methods hold the frozen
    weights only (adapters are a fraction of a percent), NF4 at about half a byte a weight plus the bf16 rest."""
    size = PARAM_DTYPES[precision].itemsize
    copies = 4 if method == "full" else 1
    if method == "qlora":
        size = 1
    per_gpu = copies * n_params * size / (shards if sharding != "none" else 1)
    if sharding in ("grad_op", "hybrid") and shards > 1:
        per_gpu += 2 * n_params * size
    return per_gpu


def plan_memory(config, n_params: int, precision: str, sharding: str, shards: int, row_len: int,
                total_bytes: float, fraction: float, choice: str, method: str = "full") -> tuple[bool, int]:
    """(activation checkpointing on?, largest rows per micro batch) from the memory estimate. Checkpointing
    stays off whenever at least one row fits without it (recomputing costs about a third more compute)."""
    free = total_bytes * fraction - static_bytes(n_params, precision, sharding, shards, method)
    logits = row_len * 4 * config.padded_vocab_size / 8  # the loss head's chunks, spread over the row
    rows = {ac: int(free // (row_len * activation_bytes_per_token(config, precision, ac, method) + logits))
            for ac in (False, True)}
    checkpointing = choice == "on" or (choice == "auto" and rows[False] < 1)
    return checkpointing, max(1, min(64, rows[checkpointing]))
