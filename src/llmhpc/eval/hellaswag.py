"""HellaSwag multiple-choice scoring, defined as lm-evaluation-harness's `hellaswag` task defines it.

- query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()); choices = preprocess(endings)
- each choice is the continuation " " + choice of the query; its score is the sum of the log-probabilities of
  the continuation's tokens, where context and continuation are tokenized together and the continuation's
  tokens are those past the context's own tokens
- acc: argmax of the sums; acc_norm: argmax of sum / len(choice) in characters (leading space excluded).
"""

from __future__ import annotations

import re
from pathlib import Path

from llmhpc.records import DataError, load_records

TEXT_FIELDS = ("activity_label", "ctx_a", "ctx_b")


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


def check_hellaswag_item(path, n: int, item) -> None:
    """Refuse item n of `path` unless it has HellaSwag's fields: the texts, 2+ endings and a label among them."""
    if not isinstance(item, dict):
        raise DataError(f"{path}: record {n} (0-based): expected an object with activity_label, ctx_a, ctx_b, endings, label")
    for field in TEXT_FIELDS:
        if field not in item:
            raise DataError(f"{path}: record {n} (0-based): field '{field}' is missing (expected a string)")
        if not isinstance(item[field], str):
            raise DataError(f"{path}: record {n} (0-based): field '{field}' must be a string, got {type(item[field]).__name__}")
    endings = item.get("endings")
    if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) and e.strip() for e in endings):
        raise DataError(f"{path}: record {n} (0-based): field 'endings' must be a list of at least 2 non-empty strings,"
                        f" got {endings!r}")
    label = item.get("label")
    try:
        gold = int(label)
    except (TypeError, ValueError):
        raise DataError(f"{path}: record {n} (0-based): field 'label' must be an integer (or its string),"
                        f" got {label!r}") from None
    if not 0 <= gold < len(endings):
        raise DataError(f"{path}: record {n} (0-based): field 'label' is {gold}, outside 0..{len(endings) - 1}")


def read_hellaswag(path: Path) -> list[dict]:
    """The items of a HellaSwag file, each checked (check_hellaswag_item)."""
    items = load_records(path)
    if not items:
        raise DataError(f"{path}: no records")
    for n, item in enumerate(items):
        check_hellaswag_item(path, n, item)
    return items
