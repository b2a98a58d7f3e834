"""HellaSwag multiple-choice scoring, defined as lm-evaluation-harness's `hellaswag` task defines it.

- query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()); choices = preprocess(endings)
- each choice is the continuation " " + choice of the query; its score is the sum of the log-probabilities of
  the continuation's tokens, where context and continuation are tokenized together and the continuation's
  tokens are those past the context's own tokens
- acc: argmax of the sums; acc_norm: argmax of sum / len(choice) in characters (leading space excluded).
"""

from __future__ import annotations

import re


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
