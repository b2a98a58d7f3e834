"""HellaSwag multiple-choice scoring, defined as lm-evaluation-harness's `hellaswag` task defines it.

- query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()); choices = preprocess(endings)
- each choice is the continuation " " + choice of the query; its score is the sum of the log-probabilities of
  the continuation's tokens, where context and continuation are tokenized together and the continuation's
  tokens are those past the context's own tokens
- acc: argmax of the sums; acc_norm: argmax of sum / len(choice) in characters (leading space excluded).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch


def preprocess(text: str) -> str:
    text = text.strip()
    # Brackets are artifacts of the WikiHow dataset portion of HellaSwag.
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def doc_to_request(doc: dict) -> tuple[str, list[str], int]:
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    query = preprocess(doc["activity_label"] + ": " + ctx)
    choices = [preprocess(ending) for ending in doc["endings"]]
    return query, choices, int(doc["label"])


@dataclass
class Encoded:
    context: list[int]
    continuations: list[list[int]]


def encode_pair(encode, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Tokens of context and continuation as lm-eval's `_encode_pair` makes them: trailing spaces of the
    context move to the continuation; the whole string is encoded and split at the context's length."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(context + continuation)
    context_tokens = encode(context)
    return context_tokens, whole[len(context_tokens):]


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


DTYPES = {"32-true": torch.float32, "16-true": torch.float16, "bf16-true": torch.bfloat16}


def load_litgpt(checkpoint_dir: Path, precision: str | None, device: str):
    """A LitGPT model and tokenizer from a checkpoint directory (lit_model.pth + model_config.yaml);
    precision None keeps the stored dtype. The weights are memory-mapped, not copied, until moved."""
    from litgpt import GPT, Config, Tokenizer

    checkpoint_dir = Path(checkpoint_dir)
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    with torch.device("meta"):
        model = GPT(config)
    state = torch.load(checkpoint_dir / "lit_model.pth", mmap=True, weights_only=True, map_location="cpu")
    state = state.get("model", state)
    model.load_state_dict(state, strict=True, assign=True)
    model.cos, model.sin = model.rope_cache(device=torch.device("cpu"))  # non-persistent buffers, still on meta
    model = model.to(device=device, dtype=DTYPES[precision] if precision else None).eval()
    model.max_seq_length = config.block_size
    return model, Tokenizer(checkpoint_dir)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def evaluate(checkpoint_dir: Path, eval_file: Path, predictions_path: Path, metrics_path: Path,
             precision: str, batch_size: int, add_bos: bool, device: str, log=print) -> dict:
    t0 = time.perf_counter()
    device = resolve_device(device)
    from llmhpc.data import read_hellaswag

    docs = read_hellaswag(eval_file)
    model, tokenizer = load_litgpt(checkpoint_dir, precision, device)
    t_loaded = time.perf_counter()
    bos_id = tokenizer.bos_id if add_bos else None
    if add_bos and bos_id is None:
        raise ValueError(f"infer.add_bos is true but the tokenizer in {checkpoint_dir} has no BOS token")

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, bos=False).tolist()

    rows = score_items(model, encode, docs, batch_size, bos_id, device)
    t_scored = time.perf_counter()
    Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
    with open(predictions_path, "w", encoding="utf-8") as fh:
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
        "bos_prepended": bool(add_bos),
        "precision": precision,
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "batch_size": batch_size,
    }
    Path(metrics_path).write_text(json.dumps(metrics, indent=1) + "\n")
    log(f"scored {n} items from {eval_file} with {checkpoint_dir}: acc {metrics['acc']:.4f}"
        f" acc_norm {metrics['acc_norm']:.4f} in {metrics['wall_s']} s")
    return metrics
