"""The model's greedy continuation computed the plain way (whole sequence each step, no KV cache, no batching),
against which the server's greedy answers are checked."""

from __future__ import annotations

import torch


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
    from llmhpc.serve.engine import tokenizer_vocab

    vocab = min(tokenizer_vocab(tokenizer), model.config.padded_vocab_size)
    ids = greedy_ids(model, tokenizer.encode(prompt).tolist(), max_new_tokens, vocab, tokenizer.eos_id)
    return tokenizer.decode(torch.tensor(ids, dtype=torch.long)) if ids else ""
