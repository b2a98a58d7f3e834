"""Real-text datasets from English prose that ships with every CPython: the reference manual's topics in
`pydoc_data.topics` (what `help("assert")` prints).

The evaluation set is in HellaSwag's schema: the context is the start of a paragraph, the right ending the
sentence that follows it, and the three wrong endings are the continuations of other paragraphs of about the same
length, so that only a model that reads the context can tell them apart (a random one scores near 25 %). The
fine-tune set (Alpaca JSON) asks for the continuation of paragraphs of topics the evaluation set does not use.
Everything is seeded: the same Python gives the same files (its manual's text is what changes between versions).
"""

from __future__ import annotations

import random
import re

EVAL_SEED = 3
FINETUNE_SEED = 4
MIN_WORDS, MAX_WORDS = 6, 40  # of a context and of an ending
# Every third topic (in sorted order) goes to the evaluation set; the rest are fine-tune material.
EVAL_EVERY = 3


def _topics() -> dict[str, str]:
    from pydoc_data.topics import topics

    return topics


def _title(text: str, key: str) -> str:
    first = text.strip().splitlines()[0].strip() if text.strip() else key
    return first.replace('"', "") if first else key


def paragraphs(text: str) -> list[str]:
    """Prose paragraphs of one topic: no headings, grammar, code, tables or lists, lines joined."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()
        if not lines or any(line.startswith((" ", "\t")) for line in lines):
            continue  # indented: code, grammar or a list
        if len(lines) > 1 and set(lines[1].strip()) <= set("*=-+") and lines[1].strip():
            continue  # a heading and its underline
        para = " ".join(line.strip() for line in lines)
        if re.search(r"::=|\[|\]|\*\*|\|", para) or not para.endswith("."):
            continue
        out.append(re.sub(r"\s+", " ", para))
    return out


def sentences(paragraph: str) -> list[str]:
    """Split after '.', '?', '!' followed by a space and a capital letter or a quote (not 'e.g. x')."""
    parts = re.split(r'(?<=[.?!])\s+(?=[A-Z"])', paragraph)
    return [p for p in parts if p]


def _words(text: str) -> int:
    return len(text.split())


def split_keys(split: str) -> list[str]:
    """The topics of a split: every EVAL_EVERY-th in sorted order for 'eval', the others for 'finetune'."""
    return [k for i, k in enumerate(sorted(_topics())) if (i % EVAL_EVERY == 0) == (split == "eval")]


def passages(split: str) -> list[dict]:
    """{topic, context, ending} for each paragraph of the split ('eval' or 'finetune') whose first sentence(s)
    and the sentence after them are each MIN_WORDS..MAX_WORDS words long."""
    topics = _topics()
    keys = set(split_keys(split))
    out = []
    for key, para in unique_paragraphs():
        if key in keys:
            title = _title(topics[key], key)
            sents = sentences(para)
            for i in range(1, len(sents)):
                context, ending = " ".join(sents[:i]), sents[i]
                if MIN_WORDS <= _words(context) <= MAX_WORDS * 2 and MIN_WORDS <= _words(ending) <= MAX_WORDS:
                    out.append({"topic": title, "key": key, "context": context, "ending": ending})
                    break  # one item per paragraph: its first usable continuation
    return out


def unique_paragraphs() -> list[tuple[str, str]]:
    """(topic, paragraph) for each distinct paragraph, under the first topic in sorted order that has it (topics
    share sections: "compound" holds "if", "while", ...), so that no paragraph is in both splits."""
    topics, seen, out = _topics(), set(), []
    for key in sorted(topics):
        for para in paragraphs(topics[key]):
            if para not in seen:
                seen.add(para)
                out.append((key, para))
    return out


def eval_records(limit: int | None = None, seed: int = EVAL_SEED) -> list[dict]:
    """HellaSwag-schema items (ind, activity_label, ctx_a, ctx_b, ctx, endings, label, split, ...)."""
    rng = random.Random(seed)
    items_src = passages("eval")
    by_length = sorted(range(len(items_src)), key=lambda i: (_words(items_src[i]["ending"]), i))
    rank = {i: r for r, i in enumerate(by_length)}
    order = list(range(len(items_src)))
    rng.shuffle(order)
    items = []
    for i in order[:limit] if limit else order:
        p = items_src[i]
        # distractors: endings of other topics' paragraphs nearest in length (within 8 ranks either side)
        r = rank[i]
        own_text = " ".join(_topics()[p["key"]].split())
        near = list(dict.fromkeys(items_src[by_length[j]]["ending"] for j in range(max(0, r - 8), min(len(by_length), r + 9))))
        wrong = rng.sample([e for e in near if e not in own_text], 3)
        label = rng.randrange(4)
        endings = wrong[:label] + [p["ending"]] + wrong[label:]
        items.append({"ind": len(items), "activity_label": p["topic"], "ctx_a": p["context"], "ctx_b": "",
                      "ctx": p["context"], "endings": endings, "source_id": f"pydoc_data~{p['key']}",
                      "split": "val", "split_type": "indomain", "label": str(label)})
    return items


def finetune_records(seed: int = FINETUNE_SEED, val_records: int = 8) -> tuple[list[dict], list[dict]]:
    """(train, val) Alpaca records: continue a paragraph of the Python reference manual, and tell what a topic
    is about (its first paragraph); only topics the evaluation set does not use."""
    rng = random.Random(seed)
    records = [{"instruction": "Continue this passage from the Python reference manual.", "input": p["context"],
                "output": p["ending"]} for p in passages("finetune")]
    topics, keys, done = _topics(), set(split_keys("finetune")), set()
    for key, para in unique_paragraphs():
        if key in keys and key not in done and _words(para) <= 3 * MAX_WORDS:
            done.add(key)
            records.append({"instruction": f"Explain this part of Python: {_title(topics[key], key)}.", "input": "",
                            "output": para})
    rng.shuffle(records)
    return records[val_records:], records[:val_records]
