"""The serve_check stage: the fine-tuned checkpoint served by `llmhpc-serve` on loopback, asked what HELM asks.

It replays HELM-shaped requests built from the evaluation contexts and checks the answers: their shape (text,
logprob, tokens with text/logprob/top_logprob, request_time; token texts add up to the text), greedy text equal to
the model's own greedy continuation (computed the plain way, the checkpoint loaded as the evaluate stage loads it),
stop sequences cut, echo returns the prompt, a seed reproduces its sample, /tokenize then /decode gives the text
back. Then a bounded load test (a fixed number of requests from HELM's 4 client threads, and a time limit): p50/p99
latency, requests/s, tokens/s into results/serve/<experiment>/metrics.json. The server is stopped whatever happens."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from llmhpc.serve import client

# HELM's /process body (helm/clients/http_model_client.py), temperature 0 sent as 1e-7.
HELM_BODY = {"temperature": 1e-7, "num_return_sequences": 1, "top_p": 1, "echo_prompt": False, "top_k_per_token": 1,
             "stop_sequences": []}


class CheckFailed(AssertionError):
    pass


def prompts(eval_file: Path, n: int) -> list[str]:
    """HELM-like prompts from the evaluation set: each item's context, in file order."""
    out = []
    for line in Path(eval_file).read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            out.append(f"{item.get('activity_label', '')}: {item['ctx']}".strip(": "))
        if len(out) == n:
            break
    return out


def server_command(checkpoint: Path, settings: dict, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "llmhpc.serve.cli", "--checkpoint", str(checkpoint), "--host", settings["host"],
           "--port", str(port), "--device", settings["device"], "--precision", settings["precision"],
           "--max-batch", str(settings["max_batch"]), "--queue-size", str(settings["queue_size"])]
    if settings.get("max_seq_length"):
        cmd += ["--max-seq-length", str(settings["max_seq_length"])]
    if settings.get("threads"):
        cmd += ["--threads", str(settings["threads"])]
    return cmd


def check_answer(answer: dict, what: str) -> None:
    for key in ("text", "logprob", "tokens", "request_time", "completions"):
        if key not in answer:
            raise CheckFailed(f"{what}: the answer has no `{key}`: {str(answer)[:300]}")
    for t in answer["tokens"]:
        if set(t) != {"text", "logprob", "top_logprob"}:
            raise CheckFailed(f"{what}: a token is not {{text, logprob, top_logprob}}: {t}")
    if "".join(t["text"] for t in answer["tokens"]) != answer["text"]:
        raise CheckFailed(f"{what}: the tokens' texts do not add up to the text")
    if abs(sum(t["logprob"] for t in answer["tokens"]) - answer["logprob"]) > 1e-3:
        raise CheckFailed(f"{what}: logprob is not the sum of the tokens' logprobs")


def call(base: str, path: str, body: dict, what: str) -> dict:
    status, answer = client.post(base, path, body)
    if status != 200:
        raise CheckFailed(f"{what}: {path} answered {status}: {str(answer)[:300]}")
    return answer


def replay(base: str, texts: list[str], reference, settings: dict, log=print) -> dict:
    """The consistency checks; `reference(prompt, n)` is the model's greedy continuation. Returns counts."""
    n_new, strict = settings["check_new_tokens"], settings["check_strict"]
    matches, mismatches = 0, []
    for i, prompt in enumerate(texts):
        what = f"prompt {i}"
        ids = call(base, "/tokenize", {"text": prompt, "truncation": True, "max_length": 2048}, what)["tokens"]
        if call(base, "/decode", {"tokens": ids}, what)["text"] != prompt:
            raise CheckFailed(f"{what}: /tokenize then /decode does not give the prompt back: {prompt!r}")
        answer = call(base, "/process", {**HELM_BODY, "prompt": prompt, "max_new_tokens": n_new}, what)
        check_answer(answer, what)
        want = reference(prompt, n_new)
        if answer["text"] == want:
            matches += 1
        else:
            mismatches.append({"prompt": prompt, "server": answer["text"], "model": want})
        if len(want) > 2:
            stop = want[len(want) // 2:len(want) // 2 + 2]
            cut = call(base, "/process", {**HELM_BODY, "prompt": prompt, "max_new_tokens": n_new, "stop_sequences": [stop]},
                       what)
            check_answer(cut, what)
            if cut["text"] != want[:want.find(stop)]:
                raise CheckFailed(f"{what}: stop sequence {stop!r} did not cut {want!r} (got {cut['text']!r})")
    prompt = texts[0]
    echo = call(base, "/process", {**HELM_BODY, "prompt": prompt, "max_new_tokens": 0, "echo_prompt": True}, "echo")
    check_answer(echo, "echo")
    if echo["text"] != prompt:
        raise CheckFailed(f"echo_prompt with max_new_tokens 0 did not answer the prompt: {echo['text']!r}")
    sampled = {"prompt": prompt, "max_new_tokens": n_new, "temperature": 0.8, "top_k": 200, "seed": 1234}
    if call(base, "/process", sampled, "seed")["text"] != call(base, "/process", sampled, "seed")["text"]:
        raise CheckFailed("the same seed gave two different samples")
    log(f"greedy text equal to the model's on {matches} of {len(texts)} prompts")
    if mismatches and strict:
        raise CheckFailed(f"greedy text differs from the model's greedy continuation: {mismatches[0]}")
    return {"greedy_checked": len(texts), "greedy_matches": matches, "greedy_mismatches": mismatches[:5]}


def load_bodies(texts: list[str], settings: dict) -> list[dict]:
    n = settings["load_requests"]
    return [{**HELM_BODY, "prompt": texts[i % len(texts)], "max_new_tokens": settings["load_new_tokens"]} for i in range(n)]


def run(checkpoint: Path, eval_file: Path, settings: dict, metrics_path: Path, server_log: Path, log=print) -> dict:
    """Start the server, check it, load it, stop it; write and return the metrics."""
    from llmhpc.serve.cli import not_a_checkpoint

    if problem := not_a_checkpoint(checkpoint):
        raise CheckFailed(f"serve_check: {problem}")
    texts = prompts(eval_file, settings["check_prompts"])
    references = _references(checkpoint, settings, texts)  # before the server: one copy of the model at a time
    port = settings["check_port"] or client.free_port(settings["host"])
    base = f"http://{settings['host']}:{port}"
    Path(server_log).parent.mkdir(parents=True, exist_ok=True)
    proc = client.start(server_command(checkpoint, settings, port), server_log)
    log(f"llmhpc-serve on {base} (pid {proc.pid}), checkpoint {checkpoint}")
    try:
        ready_s = client.wait_ready(base, proc, settings["startup_timeout_s"])
        checks = replay(base, texts, lambda prompt, n: references[prompt], settings, log)
        load = client.load_test(base, load_bodies(texts, settings), settings["load_concurrency"],
                                settings["load_time_limit_s"])
        _, health = client.get(base, "/health")
    finally:
        code = client.stop(proc)
        log(f"server stopped (exit code {code})")
    answers = load.pop("answers")
    if load["errors"]:
        raise CheckFailed(f"{load['errors']} load-test requests failed: {load['error_samples']}")
    consistent = all(answers[i] == answers[i % len(texts)] for i in answers if i % len(texts) in answers)
    metrics = {"checkpoint": str(checkpoint), "base_url": base, "startup_s": round(ready_s, 3), **checks,
               **{k: v for k, v in load.items() if k != "error_samples"}, "load_consistent": consistent,
               "load_new_tokens": settings["load_new_tokens"], "peak_batch": health.get("peak_batch"),
               "max_batch": settings["max_batch"], "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if not consistent:
        raise CheckFailed("the same greedy request answered different texts under load")
    Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_path).write_text(json.dumps(metrics, indent=1) + "\n")
    log(json.dumps(metrics, indent=1))
    return metrics


def _references(checkpoint: Path, settings: dict, texts: list[str]) -> dict[str, str]:
    """The model's greedy continuation of each prompt, the checkpoint loaded as the server loads it; the model
    is freed before the server starts."""
    import torch

    from llmhpc.serve.reference_path import greedy_text

    model, tokenizer = _reference_model(checkpoint, settings)
    out = {p: greedy_text(model, tokenizer, p, settings["check_new_tokens"]) for p in texts}
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def _reference_model(checkpoint: Path, settings: dict):
    from llmhpc.litgpt_checkpoint import default_precision, load_litgpt, resolve_device

    device = resolve_device(settings["device"])
    precision = settings["precision"]
    precision = default_precision(device) if precision == "auto" else None if precision == "stored" else precision
    return load_litgpt(checkpoint, precision, device)
