"""Does llmhpc-serve's fast path (CUDA graphs, decode windows, compiled pointwise ops, batched) answer what LitGPT's
own forward answers (the reference path, one request at a time), on a model of the benchmark's shape on the GPU?

Random weights make the logits of a 7B shape nearly flat, so in bf16 two implementations' rounding flips some
argmax within 50 tokens; in fp32 it should not. For each precision asked: the same HELM-shaped greedy requests
(prompts of 200-1,500 tokens, 50 new tokens, 3 alternatives per token) through both paths; prints how many texts
are the same, the first differing token of the others, and the largest log-probability difference over the
tokens both produced.

    python bench/serve_agreement.py --precisions 32-true,bf16-true      # Llama-2-7b shape, one GPU
    python bench/serve_agreement.py --tiny                              # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from serve_vs_litgpt import make_prompts, write_checkpoint  # noqa: E402

DTYPES = {"32-true": "float32", "bf16-true": "bfloat16"}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="Llama-2-7b-hf")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--precisions", default="32-true,bf16-true")
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=50)
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bench-serve"))
    return p.parse_args(argv)


def answers(engine, prompts: list[str], new_tokens: int, together: bool) -> list[dict]:
    """The engine's answers (its own thread), all submitted at once or each after the last."""
    from llmhpc.serve.schema import ProcessRequest

    out, events = {}, []
    engine.start()
    try:
        for i, prompt in enumerate(prompts):
            done = threading.Event()
            events.append(done)
            job = engine.make_job(ProcessRequest(prompt=prompt, temperature=1e-7, max_new_tokens=new_tokens,
                                                 top_k_per_token=3),
                                  lambda a, i=i, done=done: (out.__setitem__(i, a), done.set()))
            engine.submit(job)
            if not together:
                done.wait()
        for done in events:
            done.wait()
    finally:
        engine.stop()
    return [out[i] for i in range(len(prompts))]


def compare(fast: list[dict], ref: list[dict]) -> dict:
    """Texts alike, where the others part, the reference's gap between its two best tokens there (a near-tie
    when it is within the log-probability differences before), and the largest difference before parting."""
    same, firsts, gaps, worst = 0, [], [], 0.0
    for a, b in zip(fast, ref):
        ta, tb = [t["text"] for t in a["tokens"]], [t["text"] for t in b["tokens"]]
        same += a["text"] == b["text"]
        first = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), None)
        if first is not None:
            best = sorted(b["tokens"][first]["top_logprob"].values(), reverse=True)
            gaps.append(best[0] - best[1] if len(best) > 1 else None)
        if first is not None or len(ta) != len(tb):
            firsts.append(first if first is not None else min(len(ta), len(tb)))
        upto = firsts[-1] if first is not None else min(len(ta), len(tb))
        for x, y in zip(a["tokens"][:upto], b["tokens"][:upto]):
            worst = max(worst, abs(x["logprob"] - y["logprob"]))
    return {"same": same, "of": len(fast), "first_differing_token": firsts, "top2_gap_there": gaps,
            "max_logprob_diff": worst}


def run(precision: str, args, ckpt, prompts) -> dict:
    import torch
    from litgpt import GPT, Config, Tokenizer

    from llmhpc.serve.engine import Engine

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(Config.from_file(ckpt / "model_config.yaml"))
    model = model.to(getattr(torch, DTYPES[precision])).eval()
    tokenizer = Tokenizer(ckpt)
    fast = Engine(model, tokenizer, max_batch=args.max_batch, cuda_graphs=device == "cuda",
                  compile_pointwise=device == "cuda")
    graphs = fast.warm_up()
    got = answers(fast, prompts, args.new_tokens, together=True)
    peak = fast.peak_batch
    del fast
    reference = Engine(model, tokenizer, max_batch=args.max_batch, path="reference")
    want = answers(reference, prompts, args.new_tokens, together=False)
    del reference, model
    gc.collect()  # the engines' graphs and caches, before the next precision's model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"precision": precision, "graphs": graphs, "peak_batch": peak, **compare(got, want)}


def main(argv=None) -> int:
    args = parse(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        args.requests, args.new_tokens, args.max_batch = min(args.requests, 4), min(args.new_tokens, 12), 2
    ckpt = write_checkpoint(args.workdir, args.shape, args.tiny, weights=False)
    from litgpt import Config

    block = Config.from_file(ckpt / "model_config.yaml").block_size
    prompts = make_prompts(ckpt, "20,120" if args.tiny else "200,1500", args.requests, block, args.new_tokens)
    results = [run(p, args, ckpt, prompts) for p in args.precisions.split(",")]
    print("\n| precision | fast path (CUDA graphs, peak batch) | same greedy text as LitGPT's forward | "
          "first differing token | reference's top-2 gap there | max logprob diff before it |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['precision']} | {r['graphs']} graphs, batch {r['peak_batch']} | {r['same']}/{r['of']} | "
              f"{r['first_differing_token'] or '-'} | {[g and float(f'{g:.2e}') for g in r['top2_gap_there']] or '-'} | "
              f"{r['max_logprob_diff']:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
