"""The client side, for serve_check and the benchmark: start and stop a server process, HELM-shaped calls over
plain HTTP (http.client: nothing to install on a login node), and a bounded load test."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from urllib.parse import urlsplit


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def post(base: str, path: str, body: dict, timeout: float = 3000.0) -> tuple[int, dict]:
    """(status, JSON answer) of one POST; HELM's own client waits 3000 s."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(data)
    except ValueError:
        return resp.status, {"raw": data.decode("utf-8", "replace")}


def get(base: str, path: str, timeout: float = 5.0) -> tuple[int, dict]:
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def start(cmd: list[str], log_path, env=None) -> subprocess.Popen:
    """The server in its own process group, its output into log_path."""
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    finally:
        log.close()


def wait_ready(base: str, proc: subprocess.Popen, timeout: float) -> float:
    """Seconds until GET /health answers; raises if the process ends or the time runs out."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before answering (see its log)")
        try:
            if get(base, "/health", timeout=2)[0] == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server did not answer {base}/health within {timeout:.0f} s")


def stop(proc: subprocess.Popen, grace: float = 15.0) -> int:
    """SIGTERM to the server's process group, SIGKILL after `grace` seconds; its exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
        except ProcessLookupError:
            pass
    return proc.wait()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of values, None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def load_test(base: str, bodies: list[dict], concurrency: int, time_limit: float, timeout: float = 600.0) -> dict:
    """Send `bodies` (one request each) from `concurrency` client threads, each waiting for its answer before
    sending the next; no request starts after `time_limit` seconds. Latency per answered request, requests/s and
    generated tokens/s over the wall time."""
    lock, queue = threading.Lock(), list(reversed(bodies))
    latencies, tokens, errors, answers = [], [0], [], {}
    t0 = time.perf_counter()

    def worker():
        while True:
            with lock:
                if not queue or time.perf_counter() - t0 > time_limit:
                    return
                i, body = len(queue) - 1, queue.pop()
            start_ = time.perf_counter()
            try:
                status, answer = post(base, "/process", body, timeout=timeout)
            except OSError as err:
                status, answer = 0, {"error": str(err)}
            elapsed = time.perf_counter() - start_
            with lock:
                if status == 200:
                    latencies.append(elapsed)
                    tokens[0] += sum(len(c["tokens"]) for c in answer["completions"])
                    answers[len(bodies) - 1 - i] = answer["text"]
                else:
                    errors.append(f"{status}: {str(answer)[:200]}")

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"requests": len(bodies), "completed": len(latencies), "errors": len(errors), "error_samples": errors[:5],
            "concurrency": concurrency, "wall_s": round(wall, 4), "time_limited": len(latencies) + len(errors) < len(bodies),
            "p50_latency_s": percentile(latencies, 50), "p99_latency_s": percentile(latencies, 99),
            "requests_per_s": round(len(latencies) / wall, 4) if wall else None,
            "tokens_per_s": round(tokens[0] / wall, 4) if wall else None, "generated_tokens": tokens[0],
            "answers": answers}
