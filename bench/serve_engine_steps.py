"""Where one request's latency goes inside llmhpc-serve's engine, without HTTP: a random model of the bench's
shape built on the device, one client sending the bench's prompts (200-1,500 tokens, 50 new tokens, greedy) to the
engine directly, for each engine setting asked (decode steps between two host transfers, torch.compile of the
pointwise ops). Prints per setting the p50 latency against the single-stream decode floor, ms per decode step,
prefill ms per request, and the times of bare prefills by prompt length; the profile of one prefill and one
decode step goes to <workdir>/profile-<setting>.log.

    python bench/serve_engine_steps.py --settings sync1,sync8,sync8+compile     # Llama-2-7b shape, one GPU
    python bench/serve_engine_steps.py --tiny                                   # CPU smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from serve_vs_litgpt import copy_bandwidth, make_prompts, write_checkpoint  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="Llama-2-7b-hf")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--settings", default="sync1,sync8", help="comma list of syncN[+compile]")
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=50)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bench-serve"))
    return p.parse_args(argv)


def build(args):
    import torch
    from litgpt import GPT, Config, Tokenizer

    ckpt = write_checkpoint(args.workdir, args.shape, args.tiny, weights=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(Config.from_file(ckpt / "model_config.yaml"))
    model = model.to(torch.bfloat16 if device == "cuda" else torch.float32).eval()
    return ckpt, model, Tokenizer(ckpt)


def floor_ms_per_token(model) -> tuple[float | None, float | None]:
    """Weight bytes over the measured device-to-device copy bandwidth (read + write), as the server bench does."""
    import torch

    if not torch.cuda.is_available():
        return None, None
    bandwidth = copy_bandwidth()
    return 1e3 * sum(p.numel() * p.element_size() for p in model.parameters()) / bandwidth, bandwidth


def ask(engine, prompt: str, new_tokens: int) -> float:
    from llmhpc.serve.schema import ProcessRequest

    done = threading.Event()
    job = engine.make_job(ProcessRequest(prompt=prompt, temperature=1e-7, max_new_tokens=new_tokens,
                                         top_k_per_token=1), lambda answer: done.set())
    t0 = time.perf_counter()
    engine.submit(job)
    done.wait()
    return time.perf_counter() - t0


def bare_prefills(engine, lengths=(200, 850, 1500), reps: int = 3) -> dict:
    """ms of path.prefill alone (one prompt, synchronised) by prompt length."""
    import torch

    out = {}
    with torch.inference_mode():
        for n in lengths:
            ids = [[(7 * i) % (engine.vocab - 3) + 3 for i in range(min(n, engine.max_seq_length - 1))]]
            times = []
            for _ in range(reps + 1):
                t0 = time.perf_counter()
                last, _ = engine.path.prefill(ids, 0, [False])
                last.sum().item()
                times.append(time.perf_counter() - t0)
            out[n] = 1e3 * min(times[1:])
    return out


def run_setting(name: str, model, tokenizer, prompts, args) -> dict:
    import torch

    from llmhpc.serve.engine import Engine

    sync = int(name.split("+")[0].removeprefix("sync"))
    profile = args.workdir / f"profile-{name}.log"
    profile.unlink(missing_ok=True)
    engine = Engine(model, tokenizer, max_batch=args.max_batch, cuda_graphs=torch.cuda.is_available(),
                    compile_pointwise="compile" in name, sync_every=sync, profile_out=profile)
    t0 = time.perf_counter()
    graphs = engine.warm_up()
    warm = time.perf_counter() - t0
    engine.start()
    try:
        for prompt in prompts[:2]:  # first shapes (and the compile, if any)
            ask(engine, prompt, args.new_tokens)
        before = engine.load()
        latencies = [ask(engine, p, args.new_tokens) for p in prompts]
        after = engine.load()
    finally:
        engine.stop()
    prefills = bare_prefills(engine)
    steps = after["decode_steps"]["1"] - before["decode_steps"].get("1", 0)
    step_ms = (after["decode_ms_per_step"]["1"] * after["decode_steps"]["1"]
               - before.get("decode_ms_per_step", {}).get("1", 0) * before["decode_steps"].get("1", 0)) / steps
    result = {"setting": name, "graphs": graphs, "warm_up_s": warm, "p50_s": statistics.median(latencies),
              "mean_s": statistics.fmean(latencies), "ms_per_step": step_ms,
              "prefill_ms": 1e3 * (after["prefill_s"] - before["prefill_s"]) / len(prompts),
              "bare_prefill_ms": prefills}
    del engine
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def main(argv=None) -> int:
    args = parse(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        args.requests, args.new_tokens, args.max_batch = min(args.requests, 4), min(args.new_tokens, 8), 2
    ckpt, model, tokenizer = build(args)
    floor_ms, bandwidth = floor_ms_per_token(model)
    lo_hi = "20,120" if args.tiny else "200,1500"
    prompts = make_prompts(ckpt, lo_hi, args.requests + 2, model.config.block_size, args.new_tokens)
    results = [run_setting(name, model, tokenizer, prompts[2:] + prompts[:2], args) for name in args.settings.split(",")]
    floor_s = floor_ms * args.new_tokens / 1e3 if floor_ms else None
    print(f"\nfloor: {floor_ms and round(floor_ms, 3)} ms/token at {bandwidth and bandwidth / 1e12:.2f} TB/s"
          f" -> {floor_s and round(floor_s, 4)} s for {args.new_tokens} tokens" if floor_ms else "\nno GPU: no floor")
    print("| setting | graphs (warm-up s) | p50 s | p50 / floor | ms per step | step / floor | prefill ms per request |"
          " bare prefill ms (200 / 850 / 1500 tokens) |\n|---|---|---|---|---|---|---|---|")
    for r in results:
        bare = " / ".join(f"{v:.1f}" for v in r["bare_prefill_ms"].values())
        ratio = f"{r['p50_s'] / floor_s:.2f}x" if floor_s else "-"
        step = f"{r['ms_per_step'] / floor_ms:.2f}x" if floor_ms else "-"
        print(f"| {r['setting']} | {r['graphs']} ({r['warm_up_s']:.1f}) | {r['p50_s']:.4f} | {ratio} | "
              f"{r['ms_per_step']:.3f} | {step} | {r['prefill_ms']:.1f} | {bare} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
