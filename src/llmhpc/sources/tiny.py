"""The embedded default's model: a random-initialised model of a LitGPT-known architecture, written in
Hugging Face format with a BPE tokenizer trained here, so that the convert stage runs litgpt's real converter.

Two families are written: GPT-NeoX (Pythia, the smallest architectures LitGPT knows by name, for the embedded
default) and Llama (Llama-2-7b-hf, TinyLlama, ...: a full-size rehearsal of a fine-tune's time and memory
before the real weights arrive; throughput does not depend on the weights' values). Llama variants whose
RoPE is rescaled (Llama 3.1+) are refused: the random model would not match their converted config.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from llmhpc.sources import embedded

SPECIAL = "<|endoftext|>"


def corpus() -> list[str]:
    """Text the tokenizer is trained on: the embedded sets and the Alpaca prompt template around them."""
    train, val = embedded.finetune_records()
    texts = [
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\n\n### Input:\n\n### Response:\n"
    ]
    texts += [" ".join(r.values()) for r in train + val]
    for item in embedded.eval_records():
        texts.append(" ".join([item["activity_label"], item["ctx"], *item["endings"]]))
    return texts


def train_tokenizer(vocab_size: int):
    """Byte-level BPE (as GPT-NeoX's), so every string is encodable; id 0 is <|endoftext|> (BOS and EOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def hf_config(model_name: str) -> dict:
    """The config.json of the Hugging Face model that litgpt's Config.from_name(model_name) converts from: the
    keys transformers' GPTNeoXConfig / LlamaConfig read (tests/sources/test_tiny.py loads it with transformers)."""
    from llmhpc import litgpt_core

    cfg = litgpt_core.config_class().from_name(model_name)
    common = dict(vocab_size=cfg.padded_vocab_size, hidden_size=cfg.n_embd, num_hidden_layers=cfg.n_layer,
                  num_attention_heads=cfg.n_head, intermediate_size=cfg.intermediate_size,
                  max_position_embeddings=cfg.block_size, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
                  initializer_range=0.02)
    if cfg.mlp_class_name == "GptNeoxMLP" and cfg.parallel_residual:
        return dict(architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox", **common,
                    rotary_pct=cfg.rotary_percentage, rotary_emb_base=cfg.rope_base, use_parallel_residual=True,
                    layer_norm_eps=cfg.norm_eps, hidden_act="gelu", attention_bias=True)
    llama_like = (cfg.mlp_class_name == "LLaMAMLP" and cfg.norm_class_name == "RMSNorm" and not cfg.bias
                  and not cfg.parallel_residual and cfg.rotary_percentage == 1.0
                  and not getattr(cfg, "rope_adjustments", None) and cfg.head_size * cfg.n_head == cfg.n_embd)
    if llama_like:
        return dict(architectures=["LlamaForCausalLM"], model_type="llama", **common,
                    num_key_value_heads=cfg.n_query_groups, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_base,
                    hidden_act="silu", attention_bias=False, mlp_bias=False)
    raise ValueError(
        f"model.name '{model_name}': source 'tiny' writes GPT-NeoX (pythia-*) and Llama shapes without rescaled"
        " RoPE (Llama-2-7b-hf, tiny-llama-1.1b) only; use source 'hf' or 'path' for other architectures"
    )


def tensor_shapes(config: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor of the Hugging Face checkpoint, in transformers' names: (shape, how it is initialised as
    transformers' _init_weights does: "normal" (mean 0, initializer_range), "ones" or "zeros")."""
    c, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    if config["model_type"] == "gpt_neox":
        shapes["gpt_neox.embed_in.weight"] = ((v, c), "normal")
        for n in range(config["num_hidden_layers"]):
            pre = f"gpt_neox.layers.{n}."
            for norm in ("input_layernorm", "post_attention_layernorm"):
                shapes[pre + norm + ".weight"], shapes[pre + norm + ".bias"] = ((c,), "ones"), ((c,), "zeros")
            for name, out, inp in (("attention.query_key_value", 3 * c, c), ("attention.dense", c, c),
                                   ("mlp.dense_h_to_4h", i, c), ("mlp.dense_4h_to_h", c, i)):
                shapes[pre + name + ".weight"], shapes[pre + name + ".bias"] = ((out, inp), "normal"), ((out,), "zeros")
        shapes["gpt_neox.final_layer_norm.weight"] = ((c,), "ones")
        shapes["gpt_neox.final_layer_norm.bias"] = ((c,), "zeros")
        shapes["embed_out.weight"] = ((v, c), "normal")
        return shapes
    head = c // config["num_attention_heads"]
    kv = head * config["num_key_value_heads"]
    shapes["model.embed_tokens.weight"] = ((v, c), "normal")
    for n in range(config["num_hidden_layers"]):
        pre = f"model.layers.{n}."
        shapes[pre + "input_layernorm.weight"] = ((c,), "ones")
        for name, out, inp in (("self_attn.q_proj", c, c), ("self_attn.k_proj", kv, c), ("self_attn.v_proj", kv, c),
                               ("self_attn.o_proj", c, c), ("mlp.gate_proj", i, c), ("mlp.up_proj", i, c),
                               ("mlp.down_proj", c, i)):
            shapes[pre + name + ".weight"] = ((out, inp), "normal")
        shapes[pre + "post_attention_layernorm.weight"] = ((c,), "ones")
    shapes["model.norm.weight"] = ((c,), "ones")
    shapes["lm_head.weight"] = ((v, c), "normal")
    return shapes


def write_tiny_model(out_dir: Path, model_name: str, vocab_size: int, seed: int, dtype: str = "float32") -> dict:
    """Write config.json, model.safetensors and tokenizer files to out_dir; return a short description.
    dtype bfloat16 halves the files of a full-size model (the dtype its real weights come in).

    The tensors are written directly (transformers' names, shapes and initial distributions), not by building
    transformers' model: importing transformers (and the torchao it pulls in) was 10 of this job's 16 s on a
    2-core machine, in front of every other job of the embedded default."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = hf_config(model_name)
    shapes = tensor_shapes(config)
    parameters = sum(math.prod(shape) for shape, _ in shapes.values())
    if dtype == "float32" and parameters < 1e9:
        device = "cpu"
        _write_numpy(out_dir / "model.safetensors", shapes, config["initializer_range"], seed)
    else:
        device = _write_torch(out_dir / "model.safetensors", shapes, config["initializer_range"], seed, dtype,
                              parameters)
    (out_dir / "config.json").write_text(json.dumps({**config, "torch_dtype": dtype}, indent=2) + "\n")

    tok = train_tokenizer(vocab_size)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL,
        "eos_token": SPECIAL,
        "unk_token": SPECIAL,
        "add_bos_token": False,
        "model_max_length": config["max_position_embeddings"],
    }, indent=1) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": SPECIAL, "eos_token": SPECIAL, "unk_token": SPECIAL}, indent=1) + "\n")
    (out_dir / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 0}) + "\n")
    return {
        "architecture": model_name,
        "family": config["model_type"],
        "dtype": dtype,
        "parameters": parameters,
        "tokenizer_vocab": tok.get_vocab_size(),
        "seed": seed,
        "initialised_on": device,
    }


def _write_numpy(path: Path, shapes: dict, std: float, seed: int) -> None:
    """A small float32 model without torch (whose import is 3-4 s of this job on a 2-core machine)."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (shape, init) in shapes.items():
        if init == "normal":
            tensors[name] = rng.normal(0.0, std, size=shape).astype(np.float32)
        else:
            tensors[name] = (np.ones if init == "ones" else np.zeros)(shape, dtype=np.float32)
    save_file(tensors, str(path), metadata={"format": "pt"})  # the metadata transformers' loader requires


def _write_torch(path: Path, shapes: dict, std: float, seed: int, dtype: str, parameters: int) -> str:
    """Another dtype, or billions of parameters: drawn on the GPU where there is one (a 7B model: seconds instead
    of minutes on 16 cores), in the dtype the file holds (a 7B model in float32 would need 28 GB of memory first).
    The seed gives the same weights on the same kind of device."""
    import torch
    from safetensors.torch import save_file

    device = "cuda" if torch.cuda.is_available() and parameters > 1e9 else "cpu"
    generator = torch.Generator(device).manual_seed(seed)
    kind = getattr(torch, dtype)
    tensors = {}
    for name, (shape, init) in shapes.items():
        if init == "normal":
            t = torch.empty(shape, dtype=kind, device=device).normal_(0.0, std, generator=generator)
            tensors[name] = t.cpu()
        else:
            tensors[name] = (torch.ones if init == "ones" else torch.zeros)(shape, dtype=kind)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return device
