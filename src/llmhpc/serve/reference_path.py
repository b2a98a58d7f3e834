"""The model's greedy continuation computed the plain way (whole sequence each step, no KV cache, no batching),
against which the server's greedy answers are checked."""

from __future__ import annotations

import torch

from llmhpc.serve.sampling import tokenizer_vocab


@torch.inference_mode()
def greedy_ids(model, prompt_ids: list[int], max_new_tokens: int, vocab: int, eos_id: int | None) -> list[int]:
    ids = list(prompt_ids)
    out = []
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids], device=next(model.parameters()).device))[0, -1]
        logits[vocab:] = float("-inf")
        token = int(logits.argmax())
        if token == eos_id:
            break
        out.append(token)
        ids.append(token)
    return out


def greedy_text(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    vocab = min(tokenizer_vocab(tokenizer), model.config.padded_vocab_size)
    ids = greedy_ids(model, tokenizer.encode(prompt).tolist(), max_new_tokens, vocab, tokenizer.eos_id)
    return tokenizer.decode(torch.tensor(ids, dtype=torch.long)) if ids else ""


class LitGPTPath:
    """The engine's model work through LitGPT's own forward and KV cache (the reference the fast path is checked
    against, and the path of configs the fast one does not cover): the same interface as fastpath.FastPath."""

    def __init__(self, model, caches, vocab: int):
        self.model, self.caches, self.vocab = model, caches, vocab
        self.device = caches[0].k.device
        self.graphs, self.compiled = None, False

    def prefill(self, prompts: list[list[int]], first: int, full: list[bool]):
        width = max(len(p) for p in prompts)
        idx = torch.zeros(len(prompts), width, dtype=torch.long)
        for r, p in enumerate(prompts):
            idx[r, :len(p)] = torch.tensor(p)
        for block, cache in zip(self.model.transformer.h, self.caches):
            block.attn.kv_cache = _view(cache, first, len(prompts))
        try:
            logits = self.model(idx.to(self.device), input_pos=torch.arange(width, device=self.device),
                                input_pos_maxp1=width)
        finally:
            for block, cache in zip(self.model.transformer.h, self.caches):
                block.attn.kv_cache = cache
        logits = logits.float()
        logits[..., self.vocab:] = float("-inf")
        last = torch.stack([logits[r, len(p) - 1] for r, p in enumerate(prompts)])
        return last, [logits[r, :len(p) - 1] if full[r] and len(p) > 1 else None for r, p in enumerate(prompts)]

    def decode(self, tokens: list[int], positions: list[int], eager: bool = True) -> torch.Tensor:
        inp = torch.tensor([tokens, positions], device=self.device)
        return self.decode_device(inp[0], inp[1], max(positions))

    def decode_device(self, tokens: torch.Tensor, positions: torch.Tensor, top: int, eager: bool = True):
        logits = self.model(tokens.view(-1, 1), input_pos=positions.view(-1, 1), input_pos_maxp1=top + 1)
        logits = logits[:, -1].float()
        logits[:, self.vocab:] = float("-inf")
        return logits


def _view(cache, first: int, rows: int):
    """A KV cache whose rows are slots first..first+rows-1 of `cache` (writes land in `cache`)."""
    from litgpt.model import KVCache

    view = KVCache((1, 1, 1, 1), (1, 1, 1, 1), device=cache.k.device, dtype=cache.k.dtype)
    view.k, view.v = cache.k[first:first + rows], cache.v[first:first + rows]
    view.max_cache_len = cache.max_cache_len
    return view
