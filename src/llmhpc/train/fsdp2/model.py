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
# On a CPU 128: a chunk's logits (128 x the vocabulary) stay in cache through the log-softmax and its backward.
# 4 steps of pythia-14m's shape (50,304 words) on one core: 13.7 s against 19.8 s with 4096, the same losses.
CPU_CHUNK_TOKENS = 128


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
        n = CPU_CHUNK_TOKENS if hidden.device.type == "cpu" else CHUNK_TOKENS
        for h, t, w in zip(hidden.split(n), targets.split(n), weights.split(n)):
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
        raise ValueError(f"{config.name}: per-block RoPE indices are not supported by the fsdp2 engine")
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
