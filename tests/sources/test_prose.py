"""The real-text datasets made from CPython's own reference manual (pydoc_data): HellaSwag's schema and Alpaca's,
seeded, with distractors a length prior cannot find and no evaluation topic in the fine-tune set."""

from __future__ import annotations

import json

from llmhpc.sources import prose
from llmhpc.stages.data import check_alpaca, check_hellaswag_item, prepare_eval, prepare_finetune


def test_eval_items_are_hellaswag_items_and_seeded():
    items = prose.eval_records()
    assert len(items) >= 64
    assert items == prose.eval_records()  # deterministic
    assert items != prose.eval_records(seed=prose.EVAL_SEED + 1)
    for n, item in enumerate(items):
        check_hellaswag_item("prose", n, item)
        assert len(item["endings"]) == 4 and len(set(item["endings"])) == 4
        assert item["ctx"] == item["ctx_a"] and item["split"] == "val"
    labels = [int(i["label"]) for i in items]
    assert all(labels.count(k) >= len(items) // 8 for k in range(4))


def test_the_right_ending_is_the_next_sentence_of_its_own_paragraph():
    from pydoc_data.topics import topics

    for item in prose.eval_records()[:20]:
        key = item["source_id"].split("~")[1]
        right = item["endings"][int(item["label"])]
        text = " ".join(topics[key].split())
        assert f"{item['ctx_a']} {right}" in text
        for j, wrong in enumerate(item["endings"]):
            if j != int(item["label"]):
                assert wrong not in text  # other topics' sentences


def test_a_length_prior_scores_below_chance():
    """What a random model's flat logits amount to: picking by length gets no foothold (a trained model: 44 %
    acc, 55 % acc_norm on an earlier 98-item draft of this set)."""
    items = prose.eval_records()
    for pick in (min, max):
        hits = sum(pick(range(4), key=lambda j: len(i["endings"][j])) == int(i["label"]) for i in items)
        assert hits / len(items) < 0.35


def test_finetune_set_uses_no_evaluation_topic():
    train, val = prose.finetune_records()
    assert len(train) >= 200 and len(val) == 8
    eval_contexts = {i["ctx_a"] for i in prose.eval_records()}
    assert not eval_contexts & {r["input"] for r in train + val}
    assert set(prose.split_keys("eval")).isdisjoint(prose.split_keys("finetune"))


def test_the_data_stage_writes_them(tmp_path):
    counts = prepare_finetune({"source": "prose"}, tmp_path / "ft", tmp_path, log=lambda *a: None)
    assert counts == {"train.json": len(prose.finetune_records()[0]), "val.json": 8}
    check_alpaca(tmp_path / "ft" / "train.json")
    n = prepare_eval({"source": "prose", "limit": 16}, tmp_path / "eval.jsonl", tmp_path, log=lambda *a: None)
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert n == 16 and rows == prose.eval_records()[:16]
