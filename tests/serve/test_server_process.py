"""`llmhpc-serve` as a process on loopback: the console script, a client killed mid-answer, SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helm_bodies import HELM_PROCESS

from llmhpc.serve import client

pytestmark = [pytest.mark.subprocess, pytest.mark.litgpt]
LONG = 3000  # new tokens of the request whose client is killed: seconds of decoding on CPU


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from llmhpc.eval.tinyckpt import write_tiny_litgpt

    # wide enough that LONG new tokens take seconds on one CPU thread: the kill lands mid-answer
    ckpt = write_tiny_litgpt(tmp_path_factory.mktemp("ckpt") / "final", block_size=4096, n_embd=256, n_layer=4)
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    del config["eos_token"]  # no EOS: the long request runs to its LONG tokens, whatever the random model says
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config))
    exe = shutil.which("llmhpc-serve", path=str(Path(sys.executable).parent))
    assert exe, "console script llmhpc-serve not installed: `pip install -e .` (pyproject [project.scripts])"
    port = client.free_port()
    log = tmp_path_factory.mktemp("log") / "server.log"
    proc = client.start([exe, "--checkpoint", str(ckpt), "--port", str(port), "--threads", "1", "--max-batch", "4"], log)
    base = f"http://127.0.0.1:{port}"
    try:
        client.wait_ready(base, proc, 120)
        yield base, proc
    finally:
        client.stop(proc)


def test_a_killed_client_neither_stalls_the_batch_nor_keeps_its_slot(server):
    base, _ = server
    body = {**HELM_PROCESS, "max_new_tokens": LONG}
    doomed = subprocess.Popen([sys.executable, "-c", "import sys, json; from llmhpc.serve import client; "
                               f"client.post({base!r}, '/process', json.loads(sys.argv[1]))", json.dumps(body)])
    _until(lambda: client.get(base, "/health")[1]["active"] >= 1, 30)
    answers = []
    others = [threading.Thread(target=lambda p=p: answers.append(client.post(base, "/process", {**HELM_PROCESS, "prompt": p})))
              for p in ("one two", "alpha beta", "ten nine")]
    for t in others:
        t.start()
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    t0 = time.perf_counter()
    for t in others:
        t.join(60)
    assert [status for status, _ in answers] == [200, 200, 200]
    _until(lambda: client.get(base, "/health")[1]["active"] == 0, 10)  # the killed request's slot is freed
    assert time.perf_counter() - t0 < 10
    assert client.get(base, "/health")[1]["cancelled"] == 1  # dropped, not finished
    status, again = client.post(base, "/process", HELM_PROCESS)
    assert status == 200 and again["text"]


def test_sigterm_stops_the_server(server):
    base, proc = server
    assert client.post(base, "/decode", {"tokens": [1, 2]})[0] == 200
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught: the exit status says SIGTERM
    assert proc.wait(timeout=20) in (0, -signal.SIGTERM)


def _until(condition, timeout: float) -> None:
    t0 = time.perf_counter()
    while not condition():
        assert time.perf_counter() - t0 < timeout, "timed out"
        time.sleep(0.05)
