"""Attention over packed rows: each token sees only the earlier tokens of its own sample.

Two backends compute the same mask (document id equal and key position <= query position):
- flex: `torch.nn.attention.flex_attention` with a `BlockMask` built from the per-token document ids; on CUDA
  it skips fully masked 128x128 tiles, so packing costs no attention over padding or other samples.
- sdpa: an explicit boolean (B, 1, T, T) mask through LitGPT's own `scaled_dot_product_attention` (PyTorch's
  SDPA, memory-efficient kernel). It runs everywhere (CPU, where flex has no backward; V100, chosen there by
  `auto`) and is the reference the tests compare with.
Rows without document ids (packing off) use LitGPT's plain causal path.

torch's flex_attention module imports torch._dynamo (seconds of start-up), so it is imported where flex is
chosen, not with this module: `flex()` gives its names, and so do this module's attributes BlockMask,
create_block_mask and flex_attention (None on torch < 2.5).
"""

from __future__ import annotations

import importlib
import importlib.util
import types

import torch

FLEX = "torch.nn.attention.flex_attention"
_flex_attention = None  # torch's flex_attention, bound by `install` before any block runs or compiles
_compiled_flex = None


def flex_available() -> bool:
    return importlib.util.find_spec(FLEX) is not None


def flex() -> types.ModuleType:
    return importlib.import_module(FLEX)


def __getattr__(name: str):
    if name in ("BlockMask", "create_block_mask", "flex_attention"):
        return getattr(flex(), name) if flex_available() else None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def backend(choice: str, device: torch.device) -> str:
    if choice == "auto":  # flex's Triton kernels want Ampere or newer; V100 takes the SDPA path
        capable = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)
        return "flex" if capable and flex_available() else "sdpa"
    if choice == "flex" and not flex_available():
        raise RuntimeError("engine.attention: flex needs torch >= 2.5")
    return choice


def dense_mask(documents: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) boolean: same document and causal."""
    T = documents.size(1)
    same = documents[:, :, None] == documents[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=documents.device).tril()
    return (same & causal).unsqueeze(1)


def block_mask(documents: torch.Tensor):
    B, T = documents.shape

    def mask_mod(b, h, q, kv):
        return (documents[b, q] == documents[b, kv]) & (q >= kv)

    # compiled on CUDA (the eager builder evaluates the mask over every (q, kv) pair); eager elsewhere
    return flex().create_block_mask(mask_mod, B, None, T, T, device=documents.device, _compile=documents.is_cuda)


def make_mask(documents: torch.Tensor | None, kind: str):
    """What the blocks receive as `mask`: None (causal), a BlockMask (flex) or a boolean tensor (sdpa)."""
    if documents is None:
        return None
    return block_mask(documents) if kind == "flex" else dense_mask(documents)


def _flex(self, q, k, v, mask=None):
    """CausalSelfAttention.scaled_dot_product_attention for a BlockMask; otherwise LitGPT's own method."""
    if mask is None or isinstance(mask, torch.Tensor):  # causal, or an explicit mask: not a BlockMask
        return type(self).scaled_dot_product_attention(self, q, k, v, mask)
    # Inside a compiled block flex_attention is traced as is, and the compiled wrapper's global is never read:
    # a read (and its first assignment) there would become a guard that recompiles every block on the warm-up's
    # second pass (TORCH_LOGS=recompiles shows it). Eager on CPU (forward only: no backward there).
    if torch.compiler.is_compiling() or not q.is_cuda:
        attend = _flex_attention
    else:
        attend = compiled_flex()
    scale = 1.0 / ((self.config.attention_scores_scalar or self.config.head_size) ** 0.5)
    scale = scale * self.mscale * self.mscale
    return attend(q, k, v, block_mask=mask, scale=scale).transpose(1, 2)


def compiled_flex():
    """Eager flex_attention materialises the scores; compiled it is one fused kernel. Made once, on first use
    outside a compiled region; `install` wraps it in torch.compiler.disable, so Dynamo never traces it (the
    decorator imports Dynamo: not at this module's import)."""
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex().flex_attention)
    return _compiled_flex


def check_supported(config, packing: bool) -> None:
    """LitGPT paths that would replace or ignore a packed mask."""
    if not packing:
        return
    problems = [name for name, bad in (
        ("sliding-window attention", config.sliding_window_size is not None),
        ("attention logit softcapping", config.attention_logit_softcapping is not None),
        ("latent attention", getattr(config, "latent_attention", None)),
    ) if bad]
    if problems:
        raise ValueError(f"engine.packing: {', '.join(problems)} of {config.name} is not supported; "
                         "set engine.packing: false")


def install(model, kind: str) -> None:
    """Route BlockMask masks of every attention module to flex_attention (sdpa needs no change)."""
    if kind != "flex":
        return
    global _flex_attention, compiled_flex
    _flex_attention = flex().flex_attention
    if not getattr(compiled_flex, "_torchdynamo_disable", False):
        compiled_flex = torch.compiler.disable(compiled_flex)
    for block in model.transformer.h:
        block.attn.scaled_dot_product_attention = types.MethodType(_flex, block.attn)
