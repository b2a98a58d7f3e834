"""The engine's model work, the fast way: LitGPT's weights and KV cache buffers, its own lean forward.

Prefill: the admitted prompts right-padded into one batch, causal SDPA (`is_causal`, no mask: the flash kernel on
GPUs; padding sits after each row's tokens, so no real token sees it), their keys and values copied into their
slots in one copy per layer, and the LM head on the positions whose logits are needed only. Decode: one token per
live slot, its keys and values written with one indexed store per layer, attention over the first W positions of
the cache only (W: the longest sequence rounded up to `kv_bucket`, so that shapes repeat), the mask built for that
width (position <= the row's own). Fewer kernels than LitGPT's eager forward (RMSNorm through `F.rms_norm`, RoPE
on queries and keys at once with a roll) and no host synchronisation inside a step. With `cuda_graphs`, each
(batch bucket, width) decode step is a CUDA graph on static buffers, captured at start (`warm_up`) or on first
use; the eager step is the same code. The plain LitGPT forward stays in `reference.LitGPTPath`."""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def unsupported(config) -> str | None:
    """Why this path cannot run a model of this config (the engine then takes LitGPT's own forward), or None."""
    checks = {"attention logit softcapping": config.attention_logit_softcapping is not None,
              "sliding-window attention": config.sliding_window_size is not None,
              "per-layer RoPE indices": getattr(config, "rope_indices", None) is not None,
              "interleaved RoPE": getattr(config, "rope_interleave", False),
              "query/key norms": getattr(config, "norm_qk", False),
              "RoPE adjustments": config.rope_adjustments is not None,
              "a mixture of experts": "MoE" in config.mlp_class_name,
              "latent attention": getattr(config, "latent_attention", None) is not None}
    reasons = [name for name, hit in checks.items() if hit]
    return ", ".join(reasons) or None


def rms(x, weight, eps: float):
    return F.rms_norm(x.float(), (x.shape[-1],), weight, eps).to(x.dtype)


def rope(x, cos, sin, half: int):
    return (x * cos + x.roll(half, -1) * sin).to(x.dtype)


def silu_mul(a, b):
    return F.silu(a) * b


def _is_rms(module) -> bool:
    from litgpt.model import RMSNorm

    return type(module) is RMSNorm and module.dim == -1


def batch_buckets(max_batch: int) -> list[int]:
    """Decode batch sizes a step is padded to: powers of two below max_batch, and max_batch."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return out + [max_batch]


class FastPath:
    def __init__(self, model, caches, vocab: int, kv_bucket: int = 256, cuda_graphs: bool = False,
                 compile_pointwise: bool = False):
        self.model, self.config = model, model.config
        self.k = [c.k for c in caches]  # (max_batch, groups, max_seq_length, head_size) each
        self.v = [c.v for c in caches]
        self.max_batch, self.max_len = self.k[0].shape[0], self.k[0].shape[2]
        self.vocab, self.kv_bucket = vocab, max(1, kv_bucket)
        self.device = self.k[0].device
        cfg = self.config
        self.scale = 1.0 / math.sqrt(cfg.attention_scores_scalar or cfg.head_size)
        self.rope = cfg.rope_n_elem
        half = self.rope // 2
        self.cos, sin = model.cos, model.sin  # (rope cache length, rope_n_elem)
        self.sin_signed = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)  # roll(x) * this == rotate_half(x) * sin
        self.norm_weights = {id(m): ((1 + m.weight) if m.add_unit_offset else m.weight).float()
                             for m in model.modules() if _is_rms(m)}  # computed once, never inside a capture
        self.uncompile()
        if compile_pointwise:  # one fused kernel each (torch.compile), compiled by the first step of each shape
            self.rms, self.rope_fn, self.silu_mul = (torch.compile(f, dynamic=True, fullgraph=True)
                                                     for f in (rms, rope, silu_mul))
            self.compiled = True
        self.graphs = Graphs(self) if cuda_graphs else None

    def uncompile(self) -> None:
        """The pointwise ops eager (also what the engine falls back to when their compile fails)."""
        self.rms, self.rope_fn, self.silu_mul = rms, rope, silu_mul
        self.compiled = False

    # ------------------------------------------------------------------------------------------ pieces
    def _norm(self, norm, x):
        """LitGPT's RMSNorm (in float, the weight with its unit offset in float, back to x's dtype), fewer kernels."""
        w = self.norm_weights.get(id(norm))
        if w is None:
            return norm(x)
        # always 2-D: a compiled function keeps one variant per rank and per size-1 dimension (8 at most), and
        # prefill, decode and the head give 3-D and 2-D inputs of one row and of several
        return self.rms(x.reshape(-1, x.shape[-1]), w, norm.eps).view(x.shape)

    def _rope(self, x, cos, sin):
        """RoPE on the first rope_n_elem features of x (B, H, T, hs): x * cos + rotate_half(x) * sin."""
        if self.rope == x.shape[-1]:
            return self.rope_fn(x, cos, sin, self.rope // 2)
        return torch.cat((self.rope_fn(x[..., :self.rope], cos, sin, self.rope // 2), x[..., self.rope:]), dim=-1)

    def _attention(self, attn, x, cos, sin, store, attend):
        cfg = self.config
        B, T, _ = x.shape
        nh, ng, hs = cfg.n_head, cfg.n_query_groups, cfg.head_size
        qkv = attn.qkv(x).view(B, T, nh + 2 * ng, hs).transpose(1, 2)  # (B, nh + 2 ng, T, hs)
        qk = self._rope(qkv[:, :nh + ng], cos, sin)  # queries and keys in one go
        q, k, v = qk[:, :nh], qk[:, nh:], qkv[:, nh + ng:]
        k, v = store(k, v)
        if ng != nh:
            k, v = k.repeat_interleave(nh // ng, dim=1), v.repeat_interleave(nh // ng, dim=1)
        y = attend(q, k, v)  # (B, nh, T, hs)
        return attn.proj(y.transpose(1, 2).reshape(B, T, nh * hs))

    def _block(self, block, x, cos, sin, store, attend):
        """LitGPT's Block.forward with this path's attention."""
        x_normed = self._norm(block.norm_1, x)
        h = block.post_attention_norm(self._attention(block.attn, x_normed, cos, sin, store, attend))
        if self.config.parallel_residual:
            if not self.config.shared_attention_norm:
                x_normed = self._norm(block.norm_2, x)
            x = h + x
        else:
            x = h + x
            x_normed = self._norm(block.norm_2, x)
        return block.post_mlp_norm(self._mlp(block.mlp, x_normed)) + x

    def _mlp(self, mlp, x):
        from litgpt.model import LLaMAMLP

        if type(mlp) is not LLaMAMLP:
            return mlp(x)
        a, b = mlp.fc_1(x), mlp.fc_2(x)
        return mlp.proj(self.silu_mul(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])).view(a.shape))

    def _head(self, x):
        logits = self.model.lm_head(self._norm(self.model.transformer.ln_f, x)).float()
        if self.config.final_logit_softcapping is not None:
            logits = torch.tanh(logits / self.config.final_logit_softcapping) * self.config.final_logit_softcapping
        logits[..., self.vocab:] = float("-inf")
        return logits

    def _embed(self, idx):
        x = self.model.transformer.wte(idx)
        if self.config.scale_embeddings:
            x = x * torch.tensor(self.config.n_embd ** 0.5, dtype=x.dtype)
        return x

    # ------------------------------------------------------------------------------------------ prefill
    def prefill(self, prompts: list[list[int]], first: int, full: list[bool]):
        """Prompts into slots first.., right-padded. Returns the logits (R, V) after each prompt's last token and,
        for rows with full[r], the logits (n - 1, V) after each of its tokens but the last (else None)."""
        R, T = len(prompts), max(len(p) for p in prompts)
        idx = torch.zeros(R, T, dtype=torch.long)
        for r, p in enumerate(prompts):
            idx[r, :len(p)] = torch.tensor(p)
        x = self._embed(idx.to(self.device))
        cos, sin = self.cos[:T].view(1, 1, T, -1), self.sin_signed[:T].view(1, 1, T, -1)
        # not cuDNN's attention: it builds a plan for each new prompt length, ~1.3 ms of host time per layer and
        # request (measured on an H200: 42 of a 1,304-token prefill's 67 ms); flash needs none
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
            for i, block in enumerate(self.model.transformer.h):
                def store(k, v, i=i):
                    self.k[i][first:first + R, :, :T] = k
                    self.v[i][first:first + R, :, :T] = v
                    return k, v

                x = self._block(block, x, cos, sin, store, self._causal)
        lengths = torch.tensor([len(p) - 1 for p in prompts], device=self.device)
        last = self._head(x[torch.arange(R, device=self.device), lengths])
        scored = [self._head(x[r, :len(p) - 1]) if full[r] and len(p) > 1 else None
                  for r, p in enumerate(prompts)]
        return last, scored

    def _causal(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1, scale=self.scale)

    # ------------------------------------------------------------------------------------------ decode
    def width(self, top: int) -> int:
        """Cache positions a step attends over: the highest position plus one, rounded up to the bucket."""
        return min(self.max_len, -(-(top + 1) // self.kv_bucket) * self.kv_bucket)

    def decode(self, tokens: list[int], positions: list[int], eager: bool = False) -> torch.Tensor:
        """One decode step of slots 0..n-1 (token i at position i): logits (n, V), float, vocabulary masked;
        through its CUDA graph unless eager (writing the same keys and values: the step can be repeated)."""
        inp = torch.tensor([tokens, positions], dtype=torch.long).to(self.device)
        return self.decode_device(inp[0], inp[1], max(positions), eager)

    def decode_device(self, tokens: torch.Tensor, positions: torch.Tensor, top: int, eager: bool = False):
        """decode on device tensors (n,), `top` the highest of the positions (known to the host), so that steps
        follow one another without a host synchronisation."""
        width = self.width(top)
        if self.graphs is not None and not eager:
            try:
                return self.graphs.run(tokens, positions, width)
            except RuntimeError as err:  # a step that cannot be captured: eager from now on, said once
                print(f"llmhpc-serve: CUDA graphs off ({err})", file=sys.stderr, flush=True)
                self.graphs = None
        return self.step(tokens, positions, width)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, width: int) -> torch.Tensor:
        """The decode step on device tensors (B,) (no host synchronisation: CUDA-graph safe)."""
        B = tokens.shape[0]
        rows = torch.arange(B, device=tokens.device)
        cos = self.cos.index_select(0, positions).view(B, 1, 1, -1)
        sin = self.sin_signed.index_select(0, positions).view(B, 1, 1, -1)
        seen = torch.arange(width, device=tokens.device).view(1, width) <= positions.view(B, 1)
        mask = torch.zeros(B, 1, 1, width, dtype=self.k[0].dtype, device=tokens.device)  # additive, built once a step
        mask.masked_fill_(~seen.view(B, 1, 1, width), float("-inf"))
        x = self._embed(tokens.view(B, 1))
        for i, block in enumerate(self.model.transformer.h):
            def store(k, v, i=i):
                self.k[i][rows, :, positions] = k[:, :, 0]
                self.v[i][rows, :, positions] = v[:, :, 0]
                return self.k[i][:B, :, :width], self.v[i][:B, :, :width]

            def attend(q, k, v):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)

            x = self._block(block, x, cos, sin, store, attend)
        return self._head(x[:, 0])


class Graphs:
    """CUDA graphs of the decode step, one per (batch bucket, width), on static token and position buffers;
    rows beyond the live ones decode token 0 at position 0 of free slots (overwritten by the next prefill)."""

    def __init__(self, path: FastPath):
        self.path = path
        self.buckets = batch_buckets(path.max_batch)
        self.inp = torch.zeros(2, path.max_batch, dtype=torch.long, device=path.device)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = None

    def widths(self) -> list[int]:
        b, top = self.path.kv_bucket, self.path.max_len
        return sorted({min(top, w) for w in range(b, top + b, b)})

    def warm_up(self, max_width: int | None = None) -> int:
        """Capture every (batch bucket, width) up to max_width, largest first (they share one memory pool)."""
        for batch in reversed(self.buckets):
            for width in reversed(self.widths()):
                if max_width is None or width <= max_width:
                    self.inp.zero_()
                    self._capture(batch, width)
        return len(self.graphs)

    def run(self, tokens: torch.Tensor, positions: torch.Tensor, width: int) -> torch.Tensor:
        """Replay the step's graph on device tensors (n,); the padding rows decode token 0 at position 0."""
        n = tokens.shape[0]
        batch = next(b for b in self.buckets if b >= n)
        self.inp[0, :n].copy_(tokens)
        self.inp[1, :n].copy_(positions)
        self.inp[:, n:batch].zero_()
        graph, out = self.graphs.get((batch, width)) or self._capture(batch, width)
        graph.replay()
        return out[:n]

    def _capture(self, batch: int, width: int):
        """Warm up on a side stream (the step's writes are those of the real step), then capture."""
        tokens, positions = self.inp[0, :batch], self.inp[1, :batch]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.path.step(tokens, positions, width)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            out = self.path.step(tokens, positions, width)
        self.pool = graph.pool()
        self.graphs[(batch, width)] = (graph, out)
        return graph, out
