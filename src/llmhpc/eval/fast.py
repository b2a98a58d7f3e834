"""The fast HellaSwag scorer: each item's context computed once, its endings scored against it in one packed
row (see schedule.py for the layout), rows batched by length under a token budget, half precision on GPU.

The forward pass runs LitGPT's own blocks with an attention mask that keeps the endings of an item from seeing
each other (PyTorch scaled_dot_product_attention with a mask; on GPU its memory-efficient kernel), position ids
that continue each ending from the context, and the output head only at the positions whose next token is
scored. A model can be cut into pipeline stages (pipeline.py): the same loop runs on each stage, hidden states
travel between stages by torch.distributed point-to-point messages.

`score_items_fast` returns exactly the rows of the reference scorer (reference.score_items)."""

from __future__ import annotations

from functools import partial
from itertools import chain

import numpy as np
import torch

from llmhpc.eval.schedule import Item, Row, build_rows, encode_batch_from, make_batches, tokenize_items

DEFAULT_TOKEN_BUDGET = {"cuda": 16384, "cpu": 2048}


def check_supported(config) -> None:
    """Models whose attention takes an explicit mask through LitGPT's SDPA path."""
    problems = [name for name, bad in (
        ("attention_logit_softcapping", config.attention_logit_softcapping is not None),
        ("sliding_window_size", config.sliding_window_size is not None),
    ) if bad]
    if problems:
        raise NotImplementedError(f"fast scorer: {config.name} uses {', '.join(problems)}; use the reference scorer")


def batch_tensors(batch: list[Row], pin: bool = False) -> dict:
    """CPU tensors of one batch: tokens, positions and segments (B, T) padded at the end; the flat positions
    (b * T + t) whose next token is scored, the targets, and per target its request number in the batch."""
    width, B = len(batch[0]), len(batch)
    lengths = np.fromiter((len(r) for r in batch), dtype=np.int64, count=B)
    valid = np.arange(width)[None, :] < lengths[:, None]
    tokens = np.zeros((B, width), dtype=np.int64)
    positions = np.zeros((B, width), dtype=np.int64)
    segments = np.full((B, width), -1, dtype=np.int64)
    tokens[valid] = np.fromiter(chain.from_iterable(r.tokens for r in batch), dtype=np.int64)
    positions[valid] = np.fromiter(chain.from_iterable(r.positions for r in batch), dtype=np.int64)
    segments[valid] = np.fromiter(chain.from_iterable(r.segments for r in batch), dtype=np.int64)
    pred, target, counts, requests = [], [], [], []
    for b, row in enumerate(batch):
        for j, where, cont in row.targets:
            pred.append(np.asarray(where, dtype=np.int64) + b * width)
            target.append(cont)
            counts.append(len(cont))
            requests.append((row.item, j))
    out = {"tokens": tokens, "positions": positions, "segments": segments,
           "pred": np.concatenate(pred) if pred else np.zeros(0, dtype=np.int64),
           "target": np.fromiter(chain.from_iterable(target), dtype=np.int64),
           "req": np.repeat(np.arange(len(counts), dtype=np.int64), counts)}
    out = {k: torch.from_numpy(v) for k, v in out.items()}
    if pin:
        out = {k: v.pin_memory() for k, v in out.items()}
    out["requests"] = requests
    out["shape"] = (B, width)
    return out


def attention_mask(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, T, T) additive mask: causal, and a key of an ending visible only to its own ending. Padding
    (segment -1) sees the context, so no row of the mask is empty. The last dimension is allocated to a
    multiple of 16 (aligned strides for the fused kernels) that is always longer than T, and sliced back: every
    mask has the same (non-contiguous) layout, so the compiled blocks keep one graph (on 1 x H200 a T that was a
    multiple of 16 gave a contiguous mask and a second graph)."""
    B, T = segments.shape
    idx = torch.arange(T, device=segments.device)
    causal = idx[None, :, None] >= idx[None, None, :]
    k_seg = segments[:, None, :]
    allowed = causal & ((k_seg == 0) | (k_seg == segments[:, :, None]))
    padded = (T // 16 + 1) * 16
    mask = torch.full((B, 1, T, padded), float("-inf"), dtype=dtype, device=segments.device)
    mask[:, 0, :, :T].masked_fill_(allowed, 0.0)
    return mask[..., :T]


def fuse_rms_norms(modules) -> int:
    """LitGPT's RMSNorm (upcast, square, mean, rsqrt, two products, downcast: one kernel each) replaced by
    PyTorch's rms_norm (fp32 accumulation, one rounding at the end, as LitGPT's); returns how many."""
    from litgpt.model import RMSNorm

    n = 0
    for module in modules:
        for norm in module.modules():
            if isinstance(norm, RMSNorm) and norm.dim == -1 and not norm.add_unit_offset:
                norm.forward = partial(torch.nn.functional.rms_norm, normalized_shape=norm.weight.shape,
                                       weight=norm.weight, eps=norm.eps)
                n += 1
    return n


def _block_forward(block, x, cos, sin, mask):
    return block(x, cos, sin, mask)


_COMPILED: dict[str, object] = {}


def compiled_block(backend: str = "inductor"):
    """LitGPT's block forward under torch.compile, one function for every block: the block is an argument
    and its parameters graph inputs, so one graph (dynamic batch and length) serves all blocks and batch
    shapes. On GPU inductor fuses each block's element-wise work (RMSNorm, RoPE, SwiGLU, residual adds), which
    in eager mode took half the scoring time (docs/bench-hellaswag.md); the matrix products stay cuBLAS."""
    if backend not in _COMPILED:
        _COMPILED[backend] = torch.compile(_block_forward, dynamic=True, backend=backend)
    return _COMPILED[backend]


def compile_backend(mode: str, device) -> str | None:
    """The torch.compile backend a Stage uses: mode auto (inductor on GPU, eager on CPU: compiling costs tens of
    seconds on a CPU and saves little there), true, false, or a backend's name (tests: aot_eager)."""
    on_gpu = torch.device(device).type == "cuda"
    if mode in ("auto", None):
        return "inductor" if on_gpu else None
    if mode in ("false", False):
        return None
    return "inductor" if mode in ("true", True) else str(mode)


# Eager scoring seconds from which compiling the blocks pays back in the job: on a 7B shape, 1 x H100, the whole
# HellaSwag set scored in 37.5 s eager and 32.4 s compiled (warm cache), while a small job's compile outlasts its
# scoring. The planned work is turned into seconds at the eager rate measured there.
COMPILE_PAYS_S = 20.0
EAGER_TFLOPS = 400.0
CHARS_PER_TOKEN = 4.0  # English BPE, to plan from characters before anything is tokenised


def compile_pays(mode, device, parameters: int, characters: int) -> tuple[str | None, str]:
    """compile_backend's answer, except that `auto` on a GPU compiles only when the planned eager scoring (2 x
    parameters x tokens at EAGER_TFLOPS) reaches COMPILE_PAYS_S; with the reason, for the log and the metrics."""
    backend = compile_backend(mode, device)
    if backend is None or mode not in ("auto", None):
        return backend, f"compile {mode}" + ("" if backend else ": eager")
    seconds = 2 * parameters * characters / CHARS_PER_TOKEN / (EAGER_TFLOPS * 1e12)
    if seconds < COMPILE_PAYS_S:
        return None, (f"eager: ~{seconds:.1f} s of scoring planned, under the {COMPILE_PAYS_S:g} s from which "
                      f"compiling pays back")
    return backend, f"{backend}: ~{seconds:.0f} s of scoring planned, compiling pays back"


class Stage:
    """A model's blocks [first_block, last_block) on one device, with the embedding when it is the first stage
    and the output head when it is the last. One stage holding every block is the whole model.
    compile (see compile_backend): on GPU by default the blocks run compiled; eager, the RMS norms are fused
    on GPU (fuse=None: on GPU only; the CPU path stays LitGPT's own, operation for operation)."""

    def __init__(self, model, device, first_block: int = 0, last_block: int | None = None, fuse: bool | None = None,
                 compile: str | bool | None = "auto", compiled_ready=None):
        self.model = model
        self.device = torch.device(device)
        self.config = model.config
        n = self.config.n_layer
        self.first_block, self.last_block = first_block, n if last_block is None else last_block
        self.is_first, self.is_last = first_block == 0, self.last_block == n
        self.dtype = next(model.transformer.h[self.first_block].parameters()).dtype
        check_supported(self.config)
        self.backend = compile_backend(compile, self.device)
        self.block_fn = compiled_block(self.backend) if self.backend else _block_forward
        # while the warm-up still compiles (compiled_ready() False), batches run eager rather than wait for it
        self.compiled_ready = compiled_ready
        self.eager_batches = 0
        if fuse if fuse is not None else self.device.type == "cuda":
            # compiled, the blocks' norms stay LitGPT's: inductor fuses them, and a per-block override would
            # be a graph per block
            blocks = [] if self.backend else [model.transformer.h[i] for i in range(self.first_block, self.last_block)]
            fuse_rms_norms(blocks + ([model.transformer.ln_f] if self.is_last else []))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.model.transformer.wte(tokens)
        if self.config.scale_embeddings:
            x = x * torch.tensor(self.config.n_embd ** 0.5, dtype=x.dtype)
        return x

    def blocks(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        cos, sin = self.model.cos[positions], self.model.sin[positions]  # (B, T, rope_n_elem)
        rope_indices = self.config.rope_indices
        fn = self.block_fn
        if self.compiled_ready is not None and not self.compiled_ready():
            fn = _block_forward
            self.eager_batches += 1
        for i in range(self.first_block, self.last_block):
            c, s = (cos, sin) if rope_indices is None else (cos[..., rope_indices[i]], sin[..., rope_indices[i]])
            x = fn(self.model.transformer.h[i], x, c, s, mask)
        return x

    def loglikelihoods(self, x: torch.Tensor, t: dict, chunk: int | None = None) -> torch.Tensor:
        """Summed log-probabilities per request of the batch (float32), from the last hidden states.
        chunk: predicted positions per output-layer product. On a CPU 128, whose logits (128 x the vocabulary)
        stay in cache through the log-softmax: 15-30 % faster than 8192 on one core of a pythia-14m-shape model
        (50,304 words), where the output layer is most of the work; the sums are the same."""
        if chunk is None:
            chunk = 128 if x.device.type == "cpu" else 8192
        flat = x.reshape(-1, x.shape[-1])
        out = torch.zeros(len(t["requests"]), dtype=torch.float32, device=x.device)
        for start in range(0, t["pred"].numel(), chunk):
            sel = flat.index_select(0, t["pred"][start:start + chunk])
            logits = self.model.lm_head(self.model.transformer.ln_f(sel))
            cap = self.config.final_logit_softcapping
            if cap is not None:
                logits = torch.tanh(logits / cap) * cap
            logits = logits.float()
            target = t["target"][start:start + chunk]
            # log_softmax as lm-eval's HF model takes it: logit - logsumexp is as exact, but rounds differently in
            # float32 (up to 8e-4 nats apart on real weights over 30-150 tokens)
            logp = torch.log_softmax(logits, dim=-1).gather(1, target[:, None])[:, 0]
            out.index_add_(0, t["req"][start:start + chunk], logp)
        return out

    def to_device(self, t: dict) -> dict:
        dev = {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
        dev["mask"] = attention_mask(dev["segments"], self.dtype)
        return dev


@torch.inference_mode()
def run_stage(stage: Stage, batches: list[dict], on_result, transport=None, lag: int = 2) -> None:
    """Every batch through this stage. The first stage embeds, the others receive hidden states from the
    previous stage (transport.recv); all but the last send theirs on (transport.send); the last calls
    on_result(batch, loglikelihoods on the CPU). Results are fetched `lag` batches late so that the host
    keeps queueing work while the device computes."""
    pending = []
    for t in batches:
        d = stage.to_device(t)
        if stage.is_first:
            x = stage.embed(d["tokens"])
        else:
            x = transport.recv(d["shape"], stage.config.n_embd, stage.dtype, stage.device)
        x = stage.blocks(x, d["positions"], d["mask"])
        if not stage.is_last:
            transport.send(x)
            continue
        pending.append((t, stage.loglikelihoods(x, d)))
        while len(pending) > lag:
            done, ll = pending.pop(0)
            on_result(done, ll.cpu())
    for done, ll in pending:
        on_result(done, ll.cpu())
    if transport is not None:
        transport.finish()


class Collector:
    """Log-likelihoods per (item, choice) as batches finish; an item's row is emitted once all its choices
    are in (on_item(row)), so results can be written as they come."""

    def __init__(self, items: list[Item], on_item=None):
        self.items = items
        self.lls: dict[int, dict[int, float]] = {}
        self.rows: list[dict] = []
        self.on_item = on_item

    def __call__(self, t: dict, ll: torch.Tensor) -> None:
        values = ll.tolist()
        for (pos, j), v in zip(t["requests"], values):
            got = self.lls.setdefault(pos, {})
            got[j] = v
            item = self.items[pos]
            if len(got) == len(item.choices):
                row = prediction_row(item, [got[k] for k in range(len(item.choices))])
                del self.lls[pos]
                self.rows.append(row)
                if self.on_item is not None:
                    self.on_item(row)


def prediction_row(item: Item, lls: list[float]) -> dict:
    """The reference scorer's row for one item (same keys, same tie-breaking: the first maximum)."""
    normed = [ll / len(c) for ll, c in zip(lls, item.choices)]
    pred = max(range(len(lls)), key=lls.__getitem__)
    pred_norm = max(range(len(normed)), key=normed.__getitem__)
    return {
        "index": item.index, "query": item.query, "choices": item.choices, "gold": item.gold,
        "loglikelihoods": lls, "pred": pred, "pred_norm": pred_norm,
        "acc": int(pred == item.gold), "acc_norm": int(pred_norm == item.gold),
    }


def plan(items: list[Item], max_len: int, token_budget: int, pin: bool = False,
         first: int = 0) -> tuple[list[list[Row]], list[dict]]:
    """The batches of rows for a list of items (their positions counted from `first`), and their CPU tensors."""
    batches = make_batches(build_rows(items, max_len, first), token_budget)
    return batches, [batch_tensors(b, pin=pin) for b in batches]


def score_items_fast(model, encode, docs: list[dict], bos_id: int | None, device, token_budget: int | None = None,
                     encode_batch=None, compile: str | bool | None = "auto") -> list[dict]:
    """Per-item predictions, row for row those of reference.score_items, on one device."""
    device = torch.device(device)
    budget = token_budget or DEFAULT_TOKEN_BUDGET.get(device.type, 16384)
    items = tokenize_items(docs, encode_batch or encode_batch_from(encode), bos_id)
    _, batches = plan(items, model.max_seq_length, budget, pin=device.type == "cuda")
    collect = Collector(items)
    run_stage(Stage(model, device, compile=compile), batches, collect)
    return sorted(collect.rows, key=lambda r: r["index"])
