"""`llmhpc-serve --checkpoint DIR [--host 127.0.0.1] [--port 8080]`: serve a LitGPT checkpoint to HELM.

Loads only the checkpoint directory it is given (lit_model.pth, model_config.yaml, the tokenizer files)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="llmhpc-serve", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="LitGPT checkpoint directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 inside a container)")
    p.add_argument("--port", default=8080, type=int, help="HELM's default base URL is http://localhost:8080")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", default="auto", choices=["auto", "stored", "32-true", "16-true", "bf16-true"],
                   help="dtype of the weights: auto = bf16 on GPUs that have it, fp16 on older ones, fp32 on CPU")
    p.add_argument("--max-batch", default=16, type=int, help="sequences decoded together (KV cache slots)")
    p.add_argument("--queue-size", default=64, type=int, help="requests waiting beyond the batch; more get 503")
    p.add_argument("--max-seq-length", default=None, type=int, help="positions per slot (default: the model's)")
    p.add_argument("--prefill-tokens", default=8192, type=int, help="prompt tokens prefilled together at most")
    p.add_argument("--threads", default=None, type=int, help="torch CPU threads")
    p.add_argument("--path", default="fast", choices=["fast", "reference"],
                   help="fast: the lean forward (fastpath.py); reference: LitGPT's own forward and KV cache")
    p.add_argument("--kv-bucket", default=256, type=int,
                   help="a decode step attends over the longest sequence's positions rounded up to this")
    p.add_argument("--cuda-graphs", default="auto", choices=["auto", "on", "off"],
                   help="decode steps as CUDA graphs (auto: on a GPU), captured at start unless --no-warm-up")
    p.add_argument("--no-warm-up", action="store_true", help="capture each CUDA graph on first use instead")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="fuse RMSNorm, RoPE and SiLU x up into one kernel each (torch.compile, at warm-up; auto: on a"
                        " GPU, off if the compile fails)")
    p.add_argument("--sync-every", default=8, type=int,
                   help="decode steps run back to back, tokens chosen on the device, before one transfer to the host")
    p.add_argument("--profile-out", type=Path, help="append a torch.profiler table of one decode step per batch size")
    return p.parse_args(argv)


def not_a_checkpoint(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be served, or None."""
    missing = [n for n in ("lit_model.pth", "model_config.yaml") if not (Path(checkpoint) / n).is_file()]
    return f"{checkpoint} is not a LitGPT checkpoint (no {', '.join(missing)})" if missing else None


def build_engine(checkpoint: Path, device="auto", precision="auto", max_batch=16, queue_size=64, max_seq_length=None,
                 prefill_tokens=8192, **engine):
    """The engine on the checkpoint; `engine` passes path, kv_bucket, cuda_graphs, profile_out, compile_pointwise,
    sync_every to Engine."""
    from llmhpc.litgpt_checkpoint import default_precision, load_litgpt, resolve_device
    from llmhpc.serve.engine import Engine

    if problem := not_a_checkpoint(checkpoint):
        raise SystemExit(f"llmhpc-serve: {problem}")
    device = resolve_device(device)
    choice = engine.get("compile_pointwise", "off")  # auto / on / off (True / False from Python callers)
    engine["compile_pointwise"] = choice in (True, "on") or choice == "auto" and device.startswith("cuda")
    precision = default_precision(device) if precision == "auto" else None if precision == "stored" else precision
    model, tokenizer = load_litgpt(Path(checkpoint), precision, device)
    if max_seq_length:
        model.max_seq_length = min(max_seq_length, model.config.block_size)
    return Engine(model, tokenizer, max_batch=max_batch, queue_size=queue_size, prefill_tokens=prefill_tokens, **engine)


def main(argv=None) -> None:
    args = parse(argv)
    import torch
    import uvicorn

    from llmhpc import litgpt_core

    litgpt_core.load()  # LitGPT's model without Lightning: the server needs no more of it
    from llmhpc.serve.app import create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    engine = build_engine(args.checkpoint, args.device, args.precision, args.max_batch, args.queue_size,
                          args.max_seq_length, args.prefill_tokens, path=args.path, kv_bucket=args.kv_bucket,
                          cuda_graphs=args.cuda_graphs != "off", profile_out=args.profile_out,
                          compile_pointwise=args.compile, sync_every=args.sync_every)
    if args.cuda_graphs == "on" and engine.path.graphs is None:
        print("llmhpc-serve: no CUDA graphs (" + (engine.why_reference or "not a CUDA device") + ")", file=sys.stderr)
    t0 = time.perf_counter()
    graphs = 0 if args.no_warm_up else engine.warm_up()
    path = f"reference path ({engine.why_reference})" if engine.why_reference else "fast path"
    print(f"llmhpc-serve: {args.checkpoint} on {engine.device}, {path}, {graphs} CUDA graphs captured in "
          f"{time.perf_counter() - t0:.1f} s, max_batch {engine.max_batch}, max_seq_length {engine.max_seq_length}, "
          f"http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    uvicorn.run(create_app(engine), host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
