"""Token choice, stop cuts and token texts (pure functions, no model)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from llmhpc.serve import sampling


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = lambda out: torch.isfinite(out).nonzero().view(-1).tolist()  # noqa: E731
    assert kept(sampling.filter_logits(logits, 1.0, 2, 1.0)) == [0, 1]
    assert kept(sampling.filter_logits(logits, 1.0, 0, 0.5)) == [0]
    assert kept(sampling.filter_logits(logits, 1.0, None, 0.8)) == [0, 1]
    assert kept(sampling.filter_logits(logits, 1.0, None, 0.81)) == [0, 1, 2]
    assert kept(sampling.filter_logits(logits, 1.0, 200, 1.0)) == [0, 1, 2, 3]
    assert kept(sampling.filter_logits(logits, 0.8, 200, 5e-324)) == [0]  # 0 in float32: still the best token


def test_greedy_below_1e_5_and_seeded_sampling_is_reproducible():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    greedy = SimpleNamespace(temperature=1e-7, top_k=200, top_p=1.0)
    hot = SimpleNamespace(temperature=5.0, top_k=None, top_p=1.0)

    def gens():
        return [torch.Generator().manual_seed(s) for s in (1, 2, 3)]

    assert sampling.choose(logits, [greedy] * 3, gens()).tolist() == logits.argmax(-1).tolist()
    a, b = sampling.choose(logits, [hot] * 3, gens()), sampling.choose(logits, [hot] * 3, gens())
    assert a.tolist() == b.tolist()


def test_token_logprobs_are_log_softmax_and_the_top_alternatives():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    lps, tops = sampling.token_logprobs(logits, torch.tensor([1]), 2)
    want = torch.log_softmax(logits, -1)[0]
    assert abs(lps[0] - want[1].item()) < 1e-6 and [i for i, _ in tops[0]] == [0, 1]


def test_stop_sequences_cut_text_and_trim_the_straddling_token():
    texts = ["Hello", " wor", "ld.", " Bye"]
    end = sampling.first_stop("".join(texts), ["xyz", "ld. B", "orl"])
    assert end == len("Hello w")
    kept = sampling.cut_at(texts, end)
    assert texts[:kept] == ["Hello", " w"]
    texts = ["a", "b", "c"]
    assert sampling.cut_at(texts, 2) == 2 and texts[:2] == ["a", "b"]
    assert sampling.first_stop("abc", ["", "z"]) == -1  # an empty stop sequence never matches


def test_token_texts_add_up_across_a_character_split_over_tokens():
    data = "aé😀b".encode()
    pieces = [data[:1], data[1:2], data[2:3], data[3:5], data[5:7], data[7:]]  # é and 😀 split across tokens

    def decode(ids):
        return b"".join(pieces[i] for i in ids).decode("utf-8", "replace")

    texts = sampling.token_texts(decode, list(range(len(pieces))))
    assert "".join(texts) == "aé😀b" and texts[1] == "" and texts[2] == "é"
    assert sampling.token_texts(decode, list(range(len(pieces))), window=1) == texts
