"""Requests, packed rows and the batch schedule of the fast HellaSwag scorer (pure Python, no model).

One item (a context and its endings) becomes one packed row: the context's tokens once, then each ending's
tokens but its last (the last token is only ever a target), every ending attending to the context and to
itself only, its position ids continuing from the context. Each ending's log-likelihood is read at the
context's last position (its first token) and at its own positions (the rest), exactly the positions that
lm-eval reads in its one-request-per-row layout, so the numbers are the same computation with the context
computed once instead of four times.

An item that does not fit the model's length as one row is split into several rows (each with the context
and some endings); an ending that alone does not fit is scored as lm-eval scores it: the request
(context + ending) left-truncated to the model's length, plain causal attention.

Rows are sorted by length and cut into batches under a token budget (rows x longest row), so padding is only
the difference between neighbours in the sorted order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmhpc.eval.hellaswag import doc_to_request

CONTEXT = 0  # segment id of context tokens; ending j has segment j + 1; padding -1


@dataclass
class Item:
    index: int  # the item's position in the eval file
    query: str
    choices: list[str]
    gold: int
    context: list[int]  # BOS (if used) + the context's tokens
    continuations: list[list[int]]

    @property
    def unique_tokens(self) -> int:
        """Tokens of the item counted once: the context and every ending (the work of a shared-prefix scorer)."""
        return len(self.context) + sum(len(c) for c in self.continuations)


@dataclass
class Row:
    item: int  # position in the list of items
    tokens: list[int]
    positions: list[int]
    segments: list[int]
    # per ending scored in this row: (choice index, predictor positions in the row, target token ids)
    targets: list[tuple[int, list[int], list[int]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)


def tokenize_items(docs: list[dict], encode_batch, bos_id: int | None, first_index: int = 0,
                   indices: list[int] | None = None) -> list[Item]:
    """Items with their tokens as lm-eval's `_encode_pair` makes them (see hellaswag.encode_pair): the whole
    string context + continuation is encoded and split at the context's own length. `encode_batch` maps a
    list of strings to their token lists (the same tokens as the reference scorer's per-string `encode`)."""
    parsed, texts = [], []
    for doc in docs:
        query, choices, gold = doc_to_request(doc)
        context = query.rstrip()
        spaces = query[len(context):]  # trailing spaces of the context move to the continuation
        parsed.append((query, choices, gold))
        texts.append(context)
        texts.extend(context + spaces + " " + c for c in choices)
    encoded = encode_batch(texts)
    items, k = [], 0
    for n, (query, choices, gold) in enumerate(parsed):
        ctx = list(encoded[k])
        conts = [list(encoded[k + 1 + j][len(ctx):]) for j in range(len(choices))]
        k += 1 + len(choices)
        if bos_id is not None:
            ctx = [bos_id] + ctx
        index = indices[n] if indices is not None else first_index + n
        items.append(Item(index, query, choices, gold, ctx, conts))
    return items


def encode_batch_from(encode):
    """A batch encoder from a per-string one."""
    return lambda texts: [encode(t) for t in texts]


def _packed_row(pos: int, item: Item, choices: list[int]) -> Row:
    ctx = item.context
    n_ctx = len(ctx)
    row = Row(pos, list(ctx), list(range(n_ctx)), [CONTEXT] * n_ctx)
    for j in choices:
        cont = item.continuations[j]
        fed = cont[:-1]
        start = len(row.tokens)
        row.tokens.extend(fed)
        row.positions.extend(range(n_ctx, n_ctx + len(fed)))
        row.segments.extend([j + 1] * len(fed))
        row.targets.append((j, [n_ctx - 1] + list(range(start, start + len(fed))), list(cont)))
    return row


def _truncated_row(pos: int, item: Item, j: int, max_len: int) -> Row:
    """One request as lm-eval feeds it: (context + continuation)[-(max_len + 1):][:-1], causal."""
    cont = item.continuations[j]
    seq = (item.context + cont)[-(max_len + 1):][:-1]
    n = len(seq)
    return Row(pos, seq, list(range(n)), [CONTEXT] * n, [(j, list(range(n - len(cont), n)), list(cont))])


def item_rows(pos: int, item: Item, max_len: int) -> list[Row]:
    """The rows that score one item: one packed row when it fits `max_len` tokens, else several."""
    if not item.context:
        raise ValueError(f"item {item.index}: empty context (lm-eval would score it after an end-of-text token)")
    n_ctx = len(item.context)
    fed = [max(len(c) - 1, 0) for c in item.continuations]
    if n_ctx + sum(fed) <= max_len:
        return [_packed_row(pos, item, list(range(len(fed))))]
    rows, group, used = [], [], n_ctx
    for j, n in enumerate(fed):
        if n_ctx + n > max_len:
            rows.append(_truncated_row(pos, item, j, max_len))
            continue
        if used + n > max_len:
            rows.append(_packed_row(pos, item, group))
            group, used = [], n_ctx
        group.append(j)
        used += n
    if group:
        rows.append(_packed_row(pos, item, group))
    return rows


def build_rows(items: list[Item], max_len: int, first: int = 0) -> list[Row]:
    """The rows of `items`; a row's `item` is its item's position in the list plus `first` (the items of
    earlier chunks)."""
    rows = []
    for pos, item in enumerate(items):
        rows.extend(item_rows(first + pos, item, max_len))
    return rows


def make_batches(rows: list[Row], token_budget: int, max_rows: int | None = None) -> list[list[Row]]:
    """Rows sorted longest first, cut greedily so that rows x longest row <= token_budget (a row longer than
    the budget gets a batch of its own). Sorted neighbours differ by a token or two, so padding is small."""
    order = sorted(rows, key=len, reverse=True)
    batches, current = [], []
    for row in order:
        width = len(current[0]) if current else len(row)
        full = (len(current) + 1) * width > token_budget or (max_rows is not None and len(current) >= max_rows)
        if current and full:
            batches.append(current)
            current = []
        current.append(row)
    if current:
        batches.append(current)
    return batches


def shard_positions(sizes: list[int], n_shards: int, shard: int) -> list[int]:
    """This shard's positions in `sizes`, ascending: sorted by size and dealt out in a snake order, so shards
    get equal work."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    mine = []
    for k, i in enumerate(order):
        rnd, r = divmod(k, n_shards)
        if (r if rnd % 2 == 0 else n_shards - 1 - r) == shard:
            mine.append(i)
    return sorted(mine)


def doc_size(doc: dict) -> int:
    """An item's characters, context once and every ending: its work before it is tokenised (to shard by)."""
    query, choices, _ = doc_to_request(doc)
    return len(query) + sum(len(c) for c in choices)


def chunk_bounds(n: int, first: int = 256, growth: int = 2) -> list[tuple[int, int]]:
    """[lo, hi) chunks over n items, growing from `first`: the first batches reach the device after a few
    hundred items are tokenised, and later chunks are large enough to sort into batches with little padding."""
    bounds, lo, size = [], 0, max(1, first)
    while lo < n:
        bounds.append((lo, min(n, lo + size)))
        lo, size = lo + size, size * growth
    return bounds


def schedule_stats(items: list[Item], batches: list[list[Row]]) -> dict:
    fed = sum(len(r) for b in batches for r in b)
    padded = sum(len(b) * len(b[0]) for b in batches)
    return {
        "items": len(items),
        "unique_tokens": sum(it.unique_tokens for it in items),
        "fed_tokens": fed,
        "padded_tokens": padded,
        "padding_fraction": round(1 - fed / padded, 4) if padded else 0.0,
        "batches": len(batches),
        "rows": sum(len(b) for b in batches),
    }
