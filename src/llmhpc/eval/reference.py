"""The reference HellaSwag scorer: lm-evaluation-harness's loop, one request (context + ending) per row.

Slow by design (every context is recomputed for each of its endings); it is what the fast scorer is checked
against, item for item."""

from __future__ import annotations

import torch

from llmhpc.eval.hellaswag import doc_to_request, encode_pair


def score_items(model, encode, docs: list[dict], batch_size: int, bos_id: int | None, device) -> list[dict]:
    """Per-item predictions with every choice's summed log-likelihood and its token count."""
    requests = []  # (item index, choice index, context tokens, continuation tokens)
    parsed = []
    for i, doc in enumerate(docs):
        query, choices, gold = doc_to_request(doc)
        parsed.append((query, choices, gold))
        for j, choice in enumerate(choices):
            ctx, cont = encode_pair(encode, query, " " + choice)
            if bos_id is not None:
                ctx = [bos_id] + ctx
            requests.append((i, j, ctx, cont))

    max_len = model.max_seq_length
    loglik = {}
    per_batch = batch_size * 4
    for start in range(0, len(requests), per_batch):
        batch = requests[start:start + per_batch]
        # lm-eval feeds (context + continuation)[:-1], left-truncated to the model's length
        seqs = [(ctx + cont)[-(max_len + 1):][:-1] for _, _, ctx, cont in batch]
        width = max(len(s) for s in seqs)
        x = torch.zeros((len(seqs), width), dtype=torch.long)
        for k, s in enumerate(seqs):
            x[k, : len(s)] = torch.tensor(s, dtype=torch.long)
        with torch.inference_mode():
            logits = model(x.to(device)).float()
            logprobs = torch.log_softmax(logits, dim=-1).cpu()
        for k, (i, j, ctx, cont) in enumerate(batch):
            end = len(seqs[k])
            positions = torch.arange(end - len(cont), end)
            targets = torch.tensor(cont, dtype=torch.long)
            loglik[(i, j)] = logprobs[k, positions, targets].sum().item()

    out = []
    for i, (query, choices, gold) in enumerate(parsed):
        lls = [loglik[(i, j)] for j in range(len(choices))]
        normed = [ll / len(c) for ll, c in zip(lls, choices)]
        pred = max(range(len(lls)), key=lls.__getitem__)
        pred_norm = max(range(len(normed)), key=normed.__getitem__)
        out.append({
            "index": i, "query": query, "choices": choices, "gold": gold,
            "loglikelihoods": lls, "pred": pred, "pred_norm": pred_norm,
            "acc": int(pred == gold), "acc_norm": int(pred_norm == gold),
        })
    return out
