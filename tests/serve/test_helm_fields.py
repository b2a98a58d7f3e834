"""Every field of HELM's /process, /tokenize and /decode bodies, on a tiny model in this process."""

from __future__ import annotations

import math

import pytest
import torch
from helm_bodies import HELM_PROCESS, HELM_TOKENIZE, SAMPLE_PROCESS

from llmhpc.serve import reference_path

pytestmark = pytest.mark.litgpt


def greedy(engine, prompt, n):
    return reference_path.greedy_text(engine.model, engine.tokenizer, prompt, n)


def check_shape(answer):
    assert "".join(t["text"] for t in answer["tokens"]) == answer["text"]
    assert math.isclose(answer["logprob"], sum(t["logprob"] for t in answer["tokens"]), abs_tol=1e-6)
    assert answer["request_time"] > 0


def test_helm_body_greedy_is_the_models_greedy_continuation(client, engine):
    r = client.post("/process", HELM_PROCESS)
    assert r.status_code == 200, r.text
    answer = r.json()
    check_shape(answer)
    assert answer["text"] == greedy(engine, HELM_PROCESS["prompt"], 12)
    assert len(answer["tokens"]) == 12
    for t in answer["tokens"]:  # greedy: the token is the best alternative, its logprob the best one
        assert len(t["top_logprob"]) == 1 and math.isclose(max(t["top_logprob"].values()), t["logprob"], abs_tol=1e-5)
    assert answer["completions"][0]["text"] == answer["text"]


def test_sample_submission_body_with_its_seed_is_reproducible(client):
    a, b = client.post("/process", SAMPLE_PROCESS), client.post("/process", SAMPLE_PROCESS)
    assert a.status_code == b.status_code == 200
    assert a.json()["text"] == b.json()["text"]
    check_shape(a.json())
    other = client.post("/process", {**SAMPLE_PROCESS, "seed": 99, "max_new_tokens": 30}).json()["text"]
    assert other != client.post("/process", {**SAMPLE_PROCESS, "max_new_tokens": 30}).json()["text"]


def test_num_return_sequences_answers_that_many_completions(client):
    body = {**HELM_PROCESS, "temperature": 1.0, "num_return_sequences": 3, "seed": 5, "max_new_tokens": 20}
    answer = client.post("/process", body).json()
    assert len(answer["completions"]) == 3 and answer["text"] == answer["completions"][0]["text"]
    assert len({c["text"] for c in answer["completions"]}) > 1  # seeds seed+0, seed+1, seed+2
    assert client.post("/process", {**body, "num_return_sequences": None, "num_samples": 2}).json()["completions"][1]


def test_top_k_1_and_a_tiny_top_p_are_greedy_whatever_the_temperature(client, engine):
    want = greedy(engine, HELM_PROCESS["prompt"], 12)
    assert client.post("/process", {**HELM_PROCESS, "temperature": 2.0, "top_k": 1, "seed": 1}).json()["text"] == want
    assert client.post("/process", {**HELM_PROCESS, "temperature": 2.0, "top_p": 1e-6, "seed": 1}).json()["text"] == want


def test_top_k_per_token_gives_that_many_alternatives(client):
    answer = client.post("/process", {**HELM_PROCESS, "top_k_per_token": 5}).json()
    for t in answer["tokens"]:
        values = list(t["top_logprob"].values())
        assert 1 <= len(values) <= 5 and all(v <= 0 for v in values)  # token texts may coincide (partial UTF-8)


def test_stop_sequences_cut_the_text_and_its_tokens(client, engine):
    full = greedy(engine, HELM_PROCESS["prompt"], 12)
    stop = full[len(full) // 2:len(full) // 2 + 3]
    answer = client.post("/process", {**HELM_PROCESS, "stop_sequences": ["never seen", stop]}).json()
    check_shape(answer)
    assert answer["text"] == full[:full.find(stop)] and stop not in answer["text"]


def test_echo_prompt_returns_the_prompts_tokens_with_their_logprobs(client, engine):
    prompt = HELM_PROCESS["prompt"]
    answer = client.post("/process", {**HELM_PROCESS, "echo_prompt": True, "max_new_tokens": 0, "top_k_per_token": 3}).json()
    check_shape(answer)
    assert answer["text"] == prompt
    ids = engine.encode(prompt)  # BOS first (this tokenizer adds it), not echoed
    assert ids[0] == engine.tokenizer.bos_id and len(answer["tokens"]) == len(ids) - 1
    with torch.inference_mode():
        logp = torch.log_softmax(engine.model(torch.tensor([ids]))[0, :-1, :engine.vocab].float(), -1)
    want = logp.gather(-1, torch.tensor(ids[1:]).view(-1, 1)).view(-1).tolist()
    assert [t["logprob"] for t in answer["tokens"]] == pytest.approx(want, abs=1e-4)
    more = client.post("/process", {**HELM_PROCESS, "echo_prompt": True, "max_new_tokens": 4}).json()
    assert more["text"].startswith(prompt) and more["text"] == prompt + greedy(engine, prompt, 4)


def test_eos_ends_the_answer(client, engine):
    ids = engine.encode(HELM_PROCESS["prompt"])
    third = reference_path.greedy_ids(engine.model, ids, 3, engine.vocab, None)[2]
    saved = engine.tokenizer.eos_id
    engine.tokenizer.eos_id = third
    try:
        answer = client.post("/process", HELM_PROCESS).json()
    finally:
        engine.tokenizer.eos_id = saved
    assert len(answer["tokens"]) == 2


def test_unknown_fields_are_ignored(client):
    r = client.post("/process", {**HELM_PROCESS, "model": "anything", "frequency_penalty": 0, "logit_bias": {}})
    assert r.status_code == 200


def test_tokenize_truncates_and_decode_round_trips(client, engine):
    r = client.post("/tokenize", HELM_TOKENIZE).json()
    assert r["tokens"] == engine.encode(HELM_TOKENIZE["text"]) and r["request_time"] >= 0
    assert client.post("/decode", {"tokens": r["tokens"]}).json()["text"] == HELM_TOKENIZE["text"]
    assert len(client.post("/tokenize", {**HELM_TOKENIZE, "max_length": 2}).json()["tokens"]) == 2
    assert len(client.post("/tokenize", {**HELM_TOKENIZE, "max_length": 2, "truncation": False}).json()["tokens"]) > 2


@pytest.mark.parametrize("path,body,status,says", [
    ("/process", {"temperature": 0.5}, 422, "prompt"),
    ("/process", {"prompt": 3}, 422, "prompt"),
    ("/process", {"prompt": "a", "max_new_tokens": -1}, 422, "max_new_tokens"),
    ("/process", {"prompt": "a", "top_p": 0}, 422, "top_p"),
    ("/process", {"prompt": "a", "stop_sequences": "x"}, 422, "stop_sequences"),
    ("/process", '{"prompt": "\\ud800"}', 422, "surrogate"),  # JSON's escape of a lone surrogate
    ("/process", {"prompt": "the " * 400}, 400, "max_seq_length"),
    ("/process", {"prompt": "a", "max_new_tokens": 10_000}, 400, "max_seq_length"),
    ("/process", {"prompt": "a", "num_return_sequences": 9}, 400, "max_batch"),
    ("/decode", {"tokens": [10**30]}, 400, "vocabulary"),
    ("/decode", {"tokens": [-1]}, 400, "vocabulary"),
    ("/tokenize", {"text": "a", "max_length": 0}, 422, "max_length"),
])
def test_bad_requests_get_a_4xx_that_says_why(client, path, body, status, says):
    r = client.post(path, body)
    assert r.status_code == status and says in r.text, r.text


def test_a_full_queue_answers_503(client, engine):
    saved = engine.queue_size
    engine.queue_size = 0
    try:
        r = client.post("/process", HELM_PROCESS)
    finally:
        engine.queue_size = saved
    assert r.status_code == 503 and "queue is full" in r.text and r.headers["retry-after"] == "1"


def test_concurrent_greedy_answers_equal_sequential_ones_and_are_batched(client, engine):
    prompts = ["one two", "alpha beta gamma delta north south", "the", "ten nine eight", "sample mask pack row",
               "write a short list", "east west", "loss step", "describe the data", "four five six seven eight"]
    bodies = [{**HELM_PROCESS, "prompt": p, "max_new_tokens": 8 + 3 * i} for i, p in enumerate(prompts)]
    sequential = [client.post("/process", b).json()["text"] for b in bodies]
    engine.peak_batch = 0
    concurrent = [r.json()["text"] for r in client.many("/process", bodies)]
    assert concurrent == sequential
    assert engine.peak_batch > 1  # several sequences were decoded in one step (max_batch 8 < 10 requests)
    assert sequential == [greedy(engine, b["prompt"], b["max_new_tokens"]) for b in bodies]


def test_a_tight_prefill_budget_admits_one_request_at_a_time_with_the_same_answers(client, engine, monkeypatch):
    bodies = [{**HELM_PROCESS, "prompt": p} for p in ("one two three", "the", "alpha beta gamma delta")]
    want = [greedy(engine, b["prompt"], 12) for b in bodies]
    monkeypatch.setattr(engine, "prefill_tokens", 1)  # padded rows x longest prompt: only the first job fits
    assert [r.json()["text"] for r in client.many("/process", bodies)] == want


def test_helm_python_side_names_are_honoured_warned_and_every_request_is_logged(client, caplog):
    """max_tokens / num_completions (helm.common.request.Request's names) are read as max_new_tokens /
    num_return_sequences, the answer and the log say so, an unknown field is warned of, and each request leaves one
    access-log line with its status and latency."""
    import logging
    import re

    caplog.set_level(logging.INFO, logger="llmhpc.serve")
    body = {"prompt": HELM_PROCESS["prompt"], "temperature": 1.0, "seed": 3, "max_tokens": 5, "num_completions": 2,
            "presence_penalty": 0}
    r = client.post("/process", body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert len(answer["completions"]) == 2 and len(answer["tokens"]) == 5
    assert any("'max_tokens' read as 'max_new_tokens'" in w for w in answer["warnings"])
    assert any("unknown field 'presence_penalty'" in w for w in answer["warnings"])
    assert client.post("/process", HELM_PROCESS).json()["warnings"] == []
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "llmhpc.serve"]
    assert any("/process: field 'num_completions' read as 'num_return_sequences'" in line for line in lines)
    access = [line for line in lines if re.search(r'"POST /process" 200 [\d.]+ ms$', line)]
    assert len(access) == 2, lines
    client.post("/tokenize", {**HELM_TOKENIZE, "max_len": 3})
    assert any(re.search(r'"POST /tokenize" 200 [\d.]+ ms$', rec.getMessage()) for rec in caplog.records)
