"""HellaSwag preprocessing and request building as lm-evaluation-harness defines them."""

from llmhpc.eval.hellaswag import doc_to_request, encode_pair, preprocess


def test_preprocess_rules():
    # strip first, then " [title]" -> ". ", tags removed, every double space halved once
    assert preprocess("  Cut [title] the cake [step] now  ") == "Cut. the cake now"
    assert preprocess("a [header] b") == "a b"
    assert preprocess("a [x] [y] b") == "a  b"  # three spaces -> two: one pass only
    assert preprocess("[step] sits.") == " sits."  # stripped before the tag goes


def test_doc_to_request():
    doc = {"activity_label": "Making tea", "ctx_a": "[header] How to [title] A man boils water.",
           "ctx_b": "he then", "endings": ["pours it. ", "[step] sits."], "label": "1"}
    query, choices, gold = doc_to_request(doc)
    assert query == "Making tea: How to. A man boils water. He then"
    assert choices == ["pours it.", " sits."]
    assert gold == 1


def test_encode_pair_moves_trailing_space_to_continuation():
    seen = []

    def encode(text):
        seen.append(text)
        return [ord(c) for c in text]

    ctx, cont = encode_pair(encode, "abc ", "def")
    assert seen == ["abc def", "abc"]
    assert ctx == [97, 98, 99] and cont == [32, 100, 101, 102]


def test_a_truncated_checkpoint_is_refused_naming_the_file(tmp_path):
    import pytest
    import torch

    from llmhpc.litgpt_checkpoint import CheckpointError, read_state

    path = tmp_path / "lit_model.pth"
    torch.save({"w": torch.zeros(1000)}, path)
    assert read_state(path)["w"].shape == (1000,)
    path.write_bytes(path.read_bytes()[:2000])  # a copy or a save cut short
    with pytest.raises(CheckpointError, match=rf"{path} \(2,000 bytes\) is truncated or corrupted"):
        read_state(path)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_state(tmp_path / "missing.pth")
