"""The reference HellaSwag scorer: lm-evaluation-harness's loop, one request (context + ending) per row, in the
evaluate stage's process (its registry entry: llmhpc.eval.registry.REFERENCE).

Slow by design (every context is recomputed for each of its endings); it is what the fast scorer is checked
against, item for item."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from llmhpc import atomic
from llmhpc.eval.hellaswag import doc_to_request, encode_pair, read_hellaswag
from llmhpc.eval.registry import REFERENCE, ReferenceOptions
from llmhpc.litgpt_checkpoint import load_litgpt, resolve_device


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


def score(options: ReferenceOptions, log=print) -> dict:
    """The scorer's program: `evaluate` with the options, then the accuracy guard where they name reference
    metrics (raises guard.AccuracyGuardError when missed)."""
    metrics = evaluate(options.checkpoint, options.eval_file, options.predictions, options.metrics,
                       precision=options.precision, batch_size=options.batch_size, bos=options.bos,
                       device=options.device, log=log)
    if options.reference_metrics:
        from llmhpc.eval.guard import check_metrics

        metrics["accuracy_guard"] = check_metrics(metrics, options.reference_metrics, options.tolerance_pt)
        atomic.write_json(options.metrics, metrics)
    return metrics


def evaluate(checkpoint_dir: Path, eval_file: Path, predictions_path: Path, metrics_path: Path,
             precision: str, batch_size: int, bos: str, device: str, log=print) -> dict:
    """The reference scorer over the eval file; the metrics record the BOS decision."""
    from llmhpc.eval.loading import resolve_bos

    t0 = time.perf_counter()
    device = resolve_device(device)
    docs = read_hellaswag(eval_file)
    if precision == "auto":
        from llmhpc.litgpt_checkpoint import default_precision

        precision = default_precision(device)
    model, tokenizer = load_litgpt(checkpoint_dir, precision, device)
    t_loaded = time.perf_counter()
    bos_id, bos_why = resolve_bos(tokenizer, checkpoint_dir, str(bos).lower())

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, bos=False).tolist()

    rows = score_items(model, encode, docs, batch_size, bos_id, device)
    t_scored = time.perf_counter()
    Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(predictions_path) as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    n = len(rows)
    metrics = {
        "checkpoint": str(checkpoint_dir),
        "eval_file": str(eval_file),
        "items": n,
        "acc": sum(r["acc"] for r in rows) / n,
        "acc_norm": sum(r["acc_norm"] for r in rows) / n,
        "load_s": round(t_loaded - t0, 3),
        "score_s": round(t_scored - t_loaded, 3),
        "wall_s": round(time.perf_counter() - t0, 3),
        "items_per_s": round(n / (t_scored - t_loaded), 3),
        "scorer": REFERENCE.name,
        "bos_prepended": bos_id is not None,
        "bos": bos_why,
        "precision": precision,
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "batch_size": batch_size,
    }
    atomic.write_json(metrics_path, metrics)
    log(f"scored {n} items from {eval_file} with {checkpoint_dir}: acc {metrics['acc']:.4f}"
        f" acc_norm {metrics['acc_norm']:.4f} in {metrics['wall_s']} s")
    return metrics
