#!/usr/bin/env python3
"""Helpers of bench/hellaswag_vs_lmeval.sh (the fast HellaSwag scorer against lm-evaluation-harness).

  peak      bf16 (or fp16) matrix-product TFLOP/s of the current GPU (8192^3, the figure MFU is taken against)
  build     a random Llama-shape model (7b: the reference kit's Llama-2-7b config; 30b: LLaMA-30B's shape,
            litgpt's Platypus-30B) initialised on the GPU, written twice from the same tensors: Hugging Face
            format for lm-eval and a LitGPT checkpoint for the fast scorer (tokenizer files copied to both)
  convert   an existing Hugging Face Llama directory to a LitGPT checkpoint
  agree     per-item agreement of lm-eval's logged samples with the fast scorer's predictions
  table     the comparison table from the runs' SUMMARY lines and metrics files
  phases    one run's phases, TFLOP/s, MFU, BOS decision and first batches' padding, from its metrics file
  compile   each labelled run's compile setting and phases (LABEL:metrics.json ...), e.g. cold and warm cache
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time
from pathlib import Path

LIT_NAMES = {"7b": "Llama-2-7b-hf", "30b": "Platypus-30B", "tiny": None}
TINY = dict(name="tiny-llama-kit", block_size=4096, vocab_size=32000, padded_vocab_size=32000, n_layer=2, n_head=4,
            n_embd=64, intermediate_size=176, rotary_percentage=1.0, parallel_residual=False, bias=False,
            norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", norm_eps=1e-5)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def cmd_peak(a) -> None:
    import torch

    dtype = torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16  # V100: fp16
    n = 8192
    x, y = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(5):
        x @ y
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(20):
            x @ y
        torch.cuda.synchronize()
        best = max(best, 20 * 2 * n**3 / (time.perf_counter() - t) / 1e12)
    print(f"PEAK tflops={best:.1f} dtype={dtype} gpu={torch.cuda.get_device_name().replace(' ', '_')}", flush=True)


def lit_state(hf_sd: dict, n_layer: int) -> dict:
    """Hugging Face Llama names -> LitGPT names (q, k, v concatenated into qkv as litgpt's converter does)."""
    import torch

    out = {"transformer.wte.weight": hf_sd.pop("model.embed_tokens.weight"),
           "transformer.ln_f.weight": hf_sd.pop("model.norm.weight"),
           "lm_head.weight": hf_sd.pop("lm_head.weight")}
    for i in range(n_layer):
        p, q = f"model.layers.{i}.", f"transformer.h.{i}."
        out[q + "norm_1.weight"] = hf_sd.pop(p + "input_layernorm.weight")
        out[q + "norm_2.weight"] = hf_sd.pop(p + "post_attention_layernorm.weight")
        out[q + "attn.qkv.weight"] = torch.cat([hf_sd.pop(p + f"self_attn.{x}_proj.weight") for x in "qkv"])
        out[q + "attn.proj.weight"] = hf_sd.pop(p + "self_attn.o_proj.weight")
        out[q + "mlp.fc_1.weight"] = hf_sd.pop(p + "mlp.gate_proj.weight")
        out[q + "mlp.fc_2.weight"] = hf_sd.pop(p + "mlp.up_proj.weight")
        out[q + "mlp.proj.weight"] = hf_sd.pop(p + "mlp.down_proj.weight")
    rest = [k for k in hf_sd if "rotary" not in k]
    if rest:
        raise KeyError(f"unconverted weights: {rest[:5]}")
    return out


def lit_config(shape: str):
    from litgpt import Config

    return Config(**TINY) if shape == "tiny" else Config.from_name(LIT_NAMES[shape])


def write_lit(state: dict, lit_dir: Path, shape: str, tokenizer_dir: Path) -> None:
    import torch
    from litgpt.utils import save_config

    lit_dir.mkdir(parents=True, exist_ok=True)
    save_config(lit_config(shape), lit_dir)
    torch.save({k: v.cpu() for k, v in state.items()}, lit_dir / "lit_model.pth")
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, lit_dir / name)


def hf_config(shape: str, dtype):
    sys.path.insert(0, os.environ.get("KIT", ".bench-ref/lmeval"))
    from hs_prep import llama2_7b_config

    cfg = llama2_7b_config(shape == "tiny", dtype)
    if shape == "30b":  # LLaMA-30B (33B): litgpt's Platypus-30B config
        cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = 6656, 17920, 60
        cfg.num_attention_heads = cfg.num_key_value_heads = 52
        cfg.rms_norm_eps, cfg.max_position_embeddings = 1e-6, 2048
    return cfg


def cmd_build(a) -> None:
    import torch
    from transformers import LlamaForCausalLM

    t0 = time.perf_counter()
    cfg = hf_config(a.shape, torch.bfloat16)
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(prev)
    if device == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    hf_dir, tok_dir = Path(a.hf_out), Path(a.tokenizer)
    hf_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(hf_dir), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tok_dir / name).is_file() and tok_dir != hf_dir:
            shutil.copy(tok_dir / name, hf_dir / name)
    from litgpt.utils import save_config
    save_config(lit_config(a.shape), hf_dir)  # the fast scorer reads the safetensors files directly
    t2 = time.perf_counter()
    if a.lit_out:
        write_lit(lit_state(dict(model.state_dict()), cfg.num_hidden_layers), Path(a.lit_out), a.shape, tok_dir)
    n = sum(p.numel() for p in model.parameters())
    print(f"[build] {a.shape}: {n / 1e9:.2f} B parameters; init {t1 - t0:.1f} s, HF save {t2 - t1:.1f} s, "
          f"LitGPT save {time.perf_counter() - t2:.1f} s", flush=True)


def cmd_convert(a) -> None:
    import torch
    from safetensors import safe_open

    t0 = time.perf_counter()
    hf_dir = Path(a.hf)
    sd = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt", device="cuda" if torch.cuda.is_available() else "cpu") as fh:
            for k in fh.keys():
                sd[k] = fh.get_tensor(k)
    n_layer = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("model.layers."))
    write_lit(lit_state(sd, n_layer), Path(a.lit_out), a.shape, hf_dir)
    print(f"[convert] {hf_dir} -> {a.lit_out} in {time.perf_counter() - t0:.1f} s", flush=True)


def lmeval_rows(out_path: Path) -> dict:
    """doc_id -> (log-likelihoods, acc, acc_norm) from lm-eval's --log_samples file."""
    files = glob.glob(str(out_path / "**" / "samples_*.jsonl"), recursive=True)
    rows = {}
    for f in files:
        for line in open(f, encoding="utf-8"):
            s = json.loads(line)
            rows[s["doc_id"]] = ([float(r[0]) for r in s["filtered_resps"]], s["acc"], s["acc_norm"])
    return rows


def cmd_agree(a) -> None:
    ref = lmeval_rows(Path(a.lmeval_out))
    ours = {r["index"]: r for r in map(json.loads, open(a.predictions, encoding="utf-8"))}
    shared = sorted(set(ref) & set(ours))
    if not shared:
        print(f"AGREE items=0 (lm-eval samples {len(ref)}, ours {len(ours)})")
        return
    acc = sum(ours[i]["acc"] == ref[i][1] for i in shared) / len(shared)
    accn = sum(ours[i]["acc_norm"] == ref[i][2] for i in shared) / len(shared)
    lm_accn = sum(ref[i][2] for i in shared) / len(shared)
    our_accn = sum(ours[i]["acc_norm"] for i in shared) / len(shared)
    diff = max(abs(x - y) for i in shared for x, y in zip(ours[i]["loglikelihoods"], ref[i][0]))
    print(f"AGREE label={a.label} items={len(shared)} acc_same={acc:.4f} acc_norm_same={accn:.4f} "
          f"acc_norm_lmeval={lm_accn:.4f} acc_norm_ours={our_accn:.4f} "
          f"delta_acc_norm_pt={100 * (our_accn - lm_accn):+.2f} max_abs_ll_diff={diff:.3g}", flush=True)


def _summary(path: Path) -> dict:
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    line = [x for x in text.splitlines() if x.startswith("SUMMARY")]
    return dict(kv.split("=", 1) for kv in line[-1].split()[1:]) if line else {}


def cmd_table(a) -> None:
    rows = []
    for spec in a.runs:
        label, kind, path = spec.split(":", 2)
        p = Path(path)
        if kind == "lmeval":
            s = _summary(p)
            rows.append((label, s.get("lmeval_total_wall_s"), s.get("scoring_s"), s.get("items"),
                         s.get("acc"), s.get("acc_norm"), "-"))
        else:
            m = json.loads(p.read_text()) if p.is_file() else {}
            wall = Path(str(p) + ".wall").read_text().strip() if Path(str(p) + ".wall").is_file() else None
            rows.append((label, wall, m.get("score_s"), m.get("items"), m.get("acc"), m.get("acc_norm"),
                         m.get("mfu")))
    base = {r[0]: r for r in rows}
    print(f"{'run':34} {'whole s':>8} {'score s':>8} {'items':>6} {'acc':>7} {'acc_norm':>8} {'MFU':>6} "
          f"{'x vs ' + a.baseline:>14}")
    for r in rows:
        ratio = ""
        try:
            ratio = f"{float(base[a.baseline][1]) / float(r[1]):.2f}"
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            pass
        fmt = [("-" if v is None else (f"{float(v):.4f}" if k in (4, 5, 6) and v not in ("NA", "-") else str(v)))
               for k, v in enumerate(r)]
        print(f"{fmt[0]:34} {fmt[1]:>8} {fmt[2]:>8} {fmt[3]:>6} {fmt[4]:>7} {fmt[5]:>8} {fmt[6]:>6} {ratio:>14}")


def cmd_phases(a) -> None:
    m = json.loads(Path(a.metrics).read_text())
    print("    phases", m["phases_s"], "| tflops", m["scoring_tflops"], "mfu", m["mfu"], "| bos", m["bos"]["decision"],
          "| padding", [s["padding_fraction"] for s in m["schedule"]][:4])


def cmd_compile(a) -> None:
    for spec in a.runs:
        label, path = spec.split(":", 1)
        try:
            m = json.loads(Path(path).read_text())
        except (OSError, ValueError):  # a run that did not write its metrics prints nothing
            continue
        print(label, "compile", m.get("compile"), "phases", m.get("phases_s"))


def cmd_profile(a) -> None:
    """Kernel time by operator over a few steady-state batches of the 1-GPU scorer (where the time goes)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from llmhpc.eval.fast import Stage, plan, run_stage
    from llmhpc.eval.loading import batch_encoder, load_model_part, load_tokenizer, resolve_bos
    from llmhpc.eval.schedule import tokenize_items

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model, n_params = load_model_part(Path(a.checkpoint), "bf16-true" if dev == "cuda" else "32-true", dev)
    tok = load_tokenizer(Path(a.checkpoint))
    bos_id, _ = resolve_bos(tok, Path(a.checkpoint))
    docs = [json.loads(x) for x in open(a.eval_file, encoding="utf-8")][: a.items]
    items = tokenize_items(docs, batch_encoder(tok), bos_id)
    _, batches = plan(items, model.max_seq_length, a.token_budget, pin=dev == "cuda")
    mid = batches[len(batches) // 3: len(batches) // 3 + a.batches]
    stage = Stage(model, dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    run_stage(stage, mid[:2], lambda t, ll: None)
    sync()
    tokens = sum(t["shape"][0] * t["shape"][1] for t in mid)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        run_stage(stage, mid, lambda t, ll: None)
        sync()
    dt = time.perf_counter() - t0
    print(f"PROFILE {len(mid)} batches, {tokens} padded tokens in {dt:.3f} s (profiled): "
          f"{2 * n_params * tokens / dt / 1e12:.0f} TFLOP/s on padded tokens", flush=True)
    key = f"{'cuda' if dev == 'cuda' else 'cpu'}_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=a.rows, max_name_column_width=60))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("peak")
    p = sub.add_parser("build")
    p.add_argument("--shape", choices=sorted(LIT_NAMES), required=True)
    p.add_argument("--hf-out", required=True)
    p.add_argument("--lit-out", help="also write a LitGPT checkpoint (lit_model.pth) here")
    p.add_argument("--tokenizer", required=True)
    p = sub.add_parser("convert")
    p.add_argument("--shape", choices=sorted(LIT_NAMES), required=True)
    p.add_argument("--hf", required=True)
    p.add_argument("--lit-out", required=True)
    p = sub.add_parser("agree")
    p.add_argument("--lmeval-out", required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--label", default="")
    p = sub.add_parser("profile")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--eval-file", required=True)
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--token-budget", type=int, default=16384)
    p.add_argument("--rows", type=int, default=18)
    p = sub.add_parser("table")
    p.add_argument("--baseline", required=True)
    p.add_argument("runs", nargs="+", help="label:lmeval:SUMMARY-file or label:fast:metrics.json")
    p = sub.add_parser("phases")
    p.add_argument("metrics", help="the fast scorer's --metrics file")
    p = sub.add_parser("compile")
    p.add_argument("runs", nargs="+", help="label:metrics.json")
    a = ap.parse_args()
    {"peak": cmd_peak, "build": cmd_build, "convert": cmd_convert, "agree": cmd_agree, "table": cmd_table,
     "profile": cmd_profile, "phases": cmd_phases, "compile": cmd_compile}[a.cmd](a)


if __name__ == "__main__":
    main()
