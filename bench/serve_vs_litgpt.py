"""The HELM server against `litgpt serve` (LitServe inside, the peer a user would pick) on one checkpoint and one
GPU: 1, 4 and 16 concurrent clients sending HELM-shaped greedy requests (prompts of 200-1,500 tokens, 50 new
tokens). Records requests/s, tokens/s and p50/p99 latency of each, whether every greedy text is the same on both,
and the single-stream decode floor (the weights read once per new token at the GPU's measured copy bandwidth).
For llmhpc-serve (its fast path, CUDA graphs on a GPU) also the engine's own times per level from GET /health
(ms per decode step by batch size: at 1 client, ms per token; prefill seconds) and a torch.profiler table of one
decode step per batch size (top 10 by device time; with CUDA graphs also the same step run eagerly).

    python bench/serve_vs_litgpt.py --shape Llama-2-7b-hf            # a random-initialised model of that shape
    python bench/serve_vs_litgpt.py --checkpoint results/finetune/lora/out/final
    python bench/serve_vs_litgpt.py --tiny                           # CPU smoke run (the tests use it)

Writes <out>/serve_vs_litgpt.json and .md (default results/bench/)."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from llmhpc.serve import client  # noqa: E402

WORDS = ("the model data train token write list describe answer short long sample mask pack row step loss alpha beta "
         "gamma delta north south east west one two three four five six seven eight nine ten").split()


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="a LitGPT checkpoint directory")
    p.add_argument("--shape", default="Llama-2-7b-hf", help="LitGPT model name of the random model (no --checkpoint)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: a tiny model, short prompts, few requests")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--requests", type=int, default=0, help="requests per client count (default max(16, 4 x clients))")
    p.add_argument("--prompt-tokens", default="200,1500", help="prompt lengths drawn uniformly in lo,hi")
    p.add_argument("--new-tokens", type=int, default=50)
    p.add_argument("--precision", default="bf16-true")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bench-serve"))
    p.add_argument("--out", type=Path, default=REPO / "results/bench")
    p.add_argument("--only", choices=["llmhpc", "litgpt"], help="run one server only")
    p.add_argument("--serve-args", default="", help="more llmhpc-serve options, given with =: --serve-args='--cuda-graphs off'")
    args = p.parse_args(argv)
    if args.tiny:
        args.prompt_tokens, args.new_tokens, args.precision = "20,120", min(args.new_tokens, 16), "32-true"
        args.clients = args.clients if args.clients != "1,4,16" else "1,4"
        args.requests = args.requests or 8
    return args


def write_checkpoint(workdir: Path, shape: str, tiny: bool, weights: bool = True) -> Path:
    """A random-initialised LitGPT checkpoint whose tokenizer covers every id the model can choose (padded with
    added tokens), with the identity prompt style, so both servers see and answer the same tokens; without
    `weights`, its config and tokenizer only."""
    import torch
    from litgpt import GPT, Config
    from litgpt.prompts import Default, save_prompt_style
    from litgpt.utils import save_config
    from tokenizers import AddedToken

    from llmhpc.sources.tiny import train_tokenizer

    ckpt = workdir / ("tiny" if tiny else shape)
    if (ckpt / "lit_model.pth").is_file() or (not weights and (ckpt / "tokenizer.json").is_file()):
        return ckpt
    ckpt.mkdir(parents=True, exist_ok=True)
    config = (Config(name="bench-tiny", block_size=2048, vocab_size=512, padded_vocab_size=512, n_layer=2, n_head=4,
                     n_query_groups=2, n_embd=64, intermediate_size=128, rotary_percentage=1.0, parallel_residual=False,
                     bias=False, norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP") if tiny else Config.from_name(shape))
    tok = train_tokenizer(min(config.padded_vocab_size, 4096))
    tok.add_tokens([AddedToken(f"<x{i}>", normalized=False) for i in range(config.padded_vocab_size - tok.get_vocab_size())])
    tok.save(str(ckpt / "tokenizer.json"))
    (ckpt / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                            "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                                            "add_bos_token": True}))
    save_config(config, ckpt)
    save_prompt_style(Default(), ckpt)
    if not weights:
        return ckpt
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = GPT(config).to(torch.float32 if tiny else torch.bfloat16)
    torch.save(model.state_dict(), ckpt / "lit_model.pth")
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the servers need the GPU's memory, not this process's cache
    return ckpt


def make_prompts(ckpt: Path, lo_hi: str, n: int, block: int, new: int) -> list[str]:
    from litgpt import Tokenizer

    tok, rng = Tokenizer(ckpt), random.Random(0)
    lo, hi = map(int, lo_hi.split(","))
    out = []
    for _ in range(n):
        target = min(rng.randint(lo, hi), block - new - 2)
        words = []
        while len(tok.encode(" ".join(words))) < target:
            words += [rng.choice(WORDS) for _ in range(max(1, (target - len(tok.encode(" ".join(words)))) // 2))]
        out.append(" ".join(words))
    return out


def copy_bandwidth() -> float:
    """Bytes per second of a 2 GiB device-to-device copy, read + write (the GPU's usable memory bandwidth)."""
    import torch

    a = torch.empty(2**30, dtype=torch.uint16, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    bandwidth = 10 * 2 * a.numel() * a.element_size() / (time.perf_counter() - t0)
    del a, b
    torch.cuda.empty_cache()
    return bandwidth


def decode_floor_s(ckpt: Path, new_tokens: int) -> dict:
    """new_tokens x (weight bytes / bandwidth): the bandwidth of a 2 GiB device-to-device copy, measured."""
    import torch

    state = torch.load(ckpt / "lit_model.pth", mmap=True, weights_only=True)
    weight_bytes = sum(t.numel() * t.element_size() for t in state.values())
    if not torch.cuda.is_available():
        return {"weight_bytes": weight_bytes, "bandwidth_Bps": None, "floor_s": None}
    bandwidth = copy_bandwidth()
    return {"weight_bytes": weight_bytes, "bandwidth_Bps": bandwidth, "floor_s": new_tokens * weight_bytes / bandwidth}


def start_server(kind: str, ckpt: Path, args, port: int, log: Path):
    """The process, its base URL and how to ask it for one greedy answer."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    if kind == "llmhpc":
        cmd = [sys.executable, "-m", "llmhpc.serve.cli", "--checkpoint", str(ckpt), "--port", str(port),
               "--precision", args.precision, "--max-batch", str(args.max_batch), "--queue-size", "256",
               "--profile-out", str(args.workdir / "llmhpc-profile.log"), *args.serve_args.split()]
    else:  # litgpt's own server: greedy (temperature 0, top_k 1), the same new tokens, no request timeout
        cmd = [sys.executable, "-m", "litgpt", "serve", str(ckpt), "--port", str(port), "--precision", args.precision,
               "--temperature", "0", "--top_k", "1", "--max_new_tokens", str(args.new_tokens), "--timeout", "3000"]
    return client.start(cmd, log, env=env), f"http://127.0.0.1:{port}"


def ask(kind: str, base: str, prompt: str, new_tokens: int) -> tuple[str, int]:
    """(text, new tokens) of one greedy request: HELM's body to ours, LitServe's {"prompt"} to litgpt's."""
    if kind == "llmhpc":
        body = {"prompt": prompt, "temperature": 1e-7, "num_return_sequences": 1, "max_new_tokens": new_tokens,
                "top_p": 1, "echo_prompt": False, "top_k_per_token": 1, "stop_sequences": []}
        status, answer = client.post(base, "/process", body)
        assert status == 200, answer
        return answer["text"], len(answer["tokens"])
    status, answer = client.post(base, "/predict", {"prompt": prompt})
    assert status == 200, answer
    return answer["output"], -1


def wait_up(base: str, proc, kind: str, timeout: float = 900) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}")
        try:
            if client.post(base, "/process" if kind == "llmhpc" else "/predict", {"prompt": "one"}, timeout=600)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{kind} server did not answer within {timeout} s")


def run_level(kind: str, base: str, prompts: list[str], clients: int, new_tokens: int) -> dict:
    """`clients` threads, each sending its next prompt when its answer arrives."""
    import threading

    lock, queue, latencies, texts, tokens = threading.Lock(), list(enumerate(prompts)), [], {}, [0]

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                i, prompt = queue.pop(0)
            t0 = time.perf_counter()
            text, n = ask(kind, base, prompt, new_tokens)
            with lock:
                latencies.append(time.perf_counter() - t0)
                texts[i] = text
                tokens[0] += n if n >= 0 else new_tokens
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(prompts), "wall_s": wall, "requests_per_s": len(prompts) / wall,
            "tokens_per_s": tokens[0] / wall, "p50_latency_s": client.percentile(latencies, 50),
            "p99_latency_s": client.percentile(latencies, 99), "texts": [texts[i] for i in range(len(prompts))]}


def bench_server(kind: str, ckpt: Path, args, levels: dict[int, list[str]]) -> list[dict]:
    port = client.free_port()
    if kind == "llmhpc":
        (args.workdir / "llmhpc-profile.log").unlink(missing_ok=True)
    proc, base = start_server(kind, ckpt, args, port, args.workdir / f"{kind}.log")
    try:
        t0 = time.perf_counter()
        wait_up(base, proc, kind)
        print(f"{kind}: up in {time.perf_counter() - t0:.1f} s", flush=True)
        for prompt in next(iter(levels.values()))[:2]:  # warm-up
            ask(kind, base, prompt, args.new_tokens)
        out = []
        for clients, prompts in levels.items():
            before = health(kind, base)
            out.append(run_level(kind, base, prompts, clients, args.new_tokens))
            if before is not None:
                out[-1]["engine"] = engine_times(before, health(kind, base))
            print(f"{kind} {clients} clients: {out[-1]['requests_per_s']:.3f} req/s, p50 {out[-1]['p50_latency_s']:.3f} s"
                  + (f", engine {out[-1]['engine']}" if "engine" in out[-1] else ""), flush=True)
        return out
    finally:
        client.stop(proc)


def health(kind: str, base: str) -> dict | None:
    if kind != "llmhpc":
        return None
    status, answer = client.get(base, "/health", timeout=60)
    return answer if status == 200 else None


def engine_times(before: dict, after: dict) -> dict:
    """The engine's time during one level: mean ms per decode step by batch size, steps, prefill seconds."""
    def total_ms(h, b):
        return h.get("decode_ms_per_step", {}).get(b, 0.0) * h.get("decode_steps", {}).get(b, 0)

    steps = {b: n - before.get("decode_steps", {}).get(b, 0) for b, n in after.get("decode_steps", {}).items()}
    return {"path": after.get("path"), "cuda_graphs": after.get("cuda_graphs"),
            "prefill_s": round(after.get("prefill_s", 0.0) - before.get("prefill_s", 0.0), 4),
            "decode_steps": {b: n for b, n in steps.items() if n},
            "decode_ms_per_step": {b: round((total_ms(after, b) - total_ms(before, b)) / n, 3)
                                   for b, n in steps.items() if n}}


def engine_lines(result: dict) -> list[str]:
    """Where llmhpc-serve's time went: ms per decode step (at 1 client: per token) against the floor's."""
    ours, floor = result.get("llmhpc", []), result["floor"]
    per_token = floor["floor_s"] / result["new_tokens"] if floor["floor_s"] else None
    rows = []
    for r in ours:
        e = r.get("engine")
        if not e:
            continue
        steps = ", ".join(f"batch {b}: {ms:.2f} ms x {e['decode_steps'][b]}" for b, ms in sorted(
            e["decode_ms_per_step"].items(), key=lambda kv: int(kv[0])))
        rows.append(f"- {r['clients']} client(s), {e['path']} path, {e['cuda_graphs']} CUDA graphs: decode steps "
                    f"{steps or 'none'}; prefill {e['prefill_s']:.3f} s in all")
    one = next((r for r in ours if r["clients"] == 1 and r.get("engine")), None)
    if one and "1" in one["engine"]["decode_ms_per_step"]:
        ms = one["engine"]["decode_ms_per_step"]["1"]
        rows.append(f"- decode at 1 client: {ms:.2f} ms/token" + (
            f" (floor {per_token * 1e3:.2f} ms/token: {ms / (per_token * 1e3):.2f}x)" if per_token else ""))
    return rows


def table(result: dict, short: bool = False) -> str:
    """The markdown table, the floor, the engine's times and the profiles (short: the prefill's and batch 1's)."""
    rows = ["| clients | server | requests/s | tokens/s | p50 latency (s) | p99 latency (s) | ratio (req/s) | same greedy text |",
            "|---|---|---|---|---|---|---|---|"]
    ours, peer = result.get("llmhpc", []), {r["clients"]: r for r in result.get("litgpt", [])}
    for r in ours:
        p = peer.get(r["clients"])
        ratio = f"{r['requests_per_s'] / p['requests_per_s']:.2f}x" if p else "-"
        rows.append(f"| {r['clients']} | llmhpc-serve | {r['requests_per_s']:.3f} | {r['tokens_per_s']:.1f} | "
                    f"{r['p50_latency_s']:.3f} | {r['p99_latency_s']:.3f} | {ratio} | {r.get('same_text', '-')} |")
        if p:
            rows.append(f"| {p['clients']} | litgpt serve | {p['requests_per_s']:.3f} | {p['tokens_per_s']:.1f} | "
                        f"{p['p50_latency_s']:.3f} | {p['p99_latency_s']:.3f} | | |")
    floor = result["floor"]
    if floor["floor_s"] and ours:
        rows.append(f"\nSingle-stream decode floor: {floor['floor_s']:.3f} s for {result['new_tokens']} tokens "
                    f"({floor['weight_bytes'] / 1e9:.2f} GB of weights at {floor['bandwidth_Bps'] / 1e12:.2f} TB/s); "
                    f"p50 at 1 client / floor = {ours[0]['p50_latency_s'] / floor['floor_s']:.2f}")
    lines = engine_lines(result)
    if lines:
        rows += ["\nllmhpc-serve's engine (GET /health):", *lines]
    if result.get("profile"):
        sections = [x for x in result["profile"].split("## ")[1:]
                    if not short or x.startswith("prefill") or x.split("\n")[0].endswith("batch 1")
                    or ", batch 1," in x.split("\n")[0]]
        rows += ["\nOne prefill and one decode step, torch.profiler (llmhpc-serve --profile-out):\n```",
                 "".join("## " + x for x in sections).rstrip(), "```"]
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    args = parse(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint or write_checkpoint(args.workdir, args.shape, args.tiny)
    from litgpt import Config

    block = Config.from_file(ckpt / "model_config.yaml").block_size
    counts = [int(c) for c in args.clients.split(",")]
    levels = {c: make_prompts(ckpt, args.prompt_tokens, args.requests or max(16, 4 * c), block, args.new_tokens)
              for c in counts}
    result = {"checkpoint": str(ckpt), "new_tokens": args.new_tokens, "precision": args.precision,
              "floor": decode_floor_s(ckpt, args.new_tokens)}
    for kind in ("llmhpc", "litgpt"):
        if args.only in (None, kind):
            result[kind] = bench_server(kind, ckpt, args, levels)
            write(result, args)  # after each server: a run cut short keeps what it measured
    print(table(result, short=True))  # one prefill and the batch-1 step (with CUDA graphs: also eager)
    return 0


def write(result: dict, args) -> None:
    profile = args.workdir / "llmhpc-profile.log"
    if "llmhpc" in result and profile.is_file():
        result["profile"] = profile.read_text()
    if "llmhpc" in result and "litgpt" in result:
        for ours, peer in zip(result["llmhpc"], result["litgpt"]):
            same = sum(a == b for a, b in zip(ours["texts"], peer["texts"]))
            ours["same_text"] = f"{same}/{len(ours['texts'])}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_vs_litgpt.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "serve_vs_litgpt.md").write_text(table(result))


if __name__ == "__main__":
    sys.exit(main())
