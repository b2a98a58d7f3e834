"""Token choice among the ids the tokenizer can decode, and what is answered about each token: greedy or sampled
(temperature, top-k, top-p, a seeded generator per sequence), log-probabilities under the model (temperature 1, no
filter, as HELM reads them), the top alternatives per token, token texts that add up to the text, and the cut at the
first stop sequence."""

from __future__ import annotations

import torch

GREEDY_BELOW = 1e-5  # HELM sends temperature 1e-7 when it means 0


def tokenizer_vocab(tokenizer) -> int:
    """Ids the tokenizer can decode (special tokens included); the model's padded rows beyond are never chosen."""
    if tokenizer.backend == "huggingface":
        return tokenizer.processor.get_vocab_size(with_added_tokens=True)
    return tokenizer.processor.vocab_size()


def is_greedy(temperature: float) -> bool:
    return temperature < GREEDY_BELOW


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float) -> torch.Tensor:
    """One row of logits (V,) scaled and filtered for sampling: top_k keeps the k best (None or 0: all),
    top_p keeps the smallest set whose probability reaches top_p (always the best token)."""
    logits = logits.float() / max(temperature, GREEDY_BELOW)
    if top_k and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # tokens after the set reached top_p
        drop[0] = False  # the best token always (a top_p below float32's smallest number is 0 to the tensor)
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


def choose(logits: torch.Tensor, params: list, generators: list) -> torch.Tensor:
    """The next token of each row of logits (B, V); params[i] has temperature, top_k, top_p."""
    out = logits.argmax(-1)
    for i, p in enumerate(params):
        if not is_greedy(p.temperature):
            probs = filter_logits(logits[i], p.temperature, p.top_k, p.top_p).softmax(-1)
            out[i:i + 1] = torch.multinomial(probs, 1, generator=generators[i])  # on device: no host sync
    return out


def pick_device(logits: torch.Tensor, params: list, generators: list) -> tuple[torch.Tensor, torch.Tensor]:
    """choose and token_logprobs for a batch (B, V), on device without a host synchronisation: the chosen tokens
    (B,) and one (B, 2 + 2 n) float64 row each (token, its log-probability, the n = max top_k_per_token best ids,
    their log-probabilities) for `unpack`."""
    chosen = choose(logits, params, generators)
    logp = torch.log_softmax(logits.float(), dim=-1)
    n = max(p.top_k_per_token for p in params)
    values, ids = torch.topk(logp, n, dim=-1)
    column = chosen.view(-1, 1)
    packed = torch.cat([column.double(), logp.gather(-1, column).double(), ids.double(), values.double()], 1)
    return chosen, packed


def unpack(row: list[float], top_k_per_token: int) -> tuple[int, float, list]:
    """One row of pick_device's packed output on the host: (token, its log-probability, the top_k_per_token best
    (id, log-probability))."""
    n, k = (len(row) - 2) // 2, top_k_per_token
    return int(row[0]), row[1], [(int(i), v) for i, v in zip(row[2:2 + k], row[2 + n:2 + n + k])]


def pick(logits: torch.Tensor, params: list, generators: list) -> list[tuple[int, float, list]]:
    """pick_device with its one transfer to the host, unpacked per row."""
    _, packed = pick_device(logits, params, generators)
    return [unpack(row, p.top_k_per_token) for row, p in zip(packed.tolist(), params)]


def token_logprobs(logits: torch.Tensor, chosen: torch.Tensor, top_n: int) -> tuple[list, list]:
    """Log-probability of each chosen token under the model (B, V) logits, and the top_n (id, logprob)
    alternatives of each row."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, chosen.view(-1, 1)).view(-1).tolist()
    values, ids = torch.topk(logp, top_n, dim=-1)
    tops = [list(zip(i, v)) for i, v in zip(ids.tolist(), values.tolist())]
    return picked, tops


def token_texts(decode, ids: list[int], window: int | None = 8) -> list[str]:
    """The text each token adds, so that "".join(texts) == decode(ids). A token that ends inside a character
    (byte-level BPE splits UTF-8) adds "" and the token completing the character adds all of it. Each text is the
    difference of two decodes starting at a whole-character point `window` tokens back (the context keeps
    SentencePiece's leading spaces); checked against the whole decode, else redone from the start."""
    texts, complete = [], [0]  # token counts after which the decoded text ends with a whole character
    for i in range(len(ids)):
        start = 0 if window is None else max([c for c in complete if c <= i - window] or [0])
        previous, current = decode(ids[start:complete[-1]]), decode(ids[start:i + 1])
        if current.endswith("\ufffd") and i < len(ids) - 1 and i + 1 - complete[-1] < 4:
            texts.append("")  # inside a character: wait for its last byte
            continue
        common = len(previous) if current.startswith(previous) else len(_common_prefix(previous, current))
        texts.append(current[common:])
        complete.append(i + 1)
    if window is not None and "".join(texts) != decode(ids):
        return token_texts(decode, ids, None)
    return texts


def extend_text(decode, ids: list[int], done: int, window: int = 8) -> tuple[str, int]:
    """The text that tokens ids[done:] add to the text of ids[:done] (done: a count of tokens after which the text
    ends with a whole character), decoding a few tokens only, and the new such count (`done` again while the new
    tokens end inside a character). For the incremental stop-sequence check; the answer's own cut decodes it all."""
    start = max(0, done - window)
    previous, current = decode(ids[start:done]), decode(ids[start:])
    if current.endswith("\ufffd") and len(ids) - done < 4:
        return "", done
    common = len(previous) if current.startswith(previous) else len(_common_prefix(previous, current))
    return current[common:], len(ids)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def first_stop(text: str, stops: list[str]) -> int:
    """Where the earliest stop sequence begins in text, or -1."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else -1


def cut_at(texts: list[str], end: int) -> int:
    """How many tokens are kept when the text is cut at character `end`; the last kept token's text is
    trimmed in place so that the kept texts add up to text[:end]."""
    total = 0
    for i, t in enumerate(texts):
        if total + len(t) >= end:
            texts[i] = t[:end - total]
            return i + 1 if texts[i] else i
        total += len(t)
    return len(texts)
